"""Builds the C++ runtime tests standalone with AddressSanitizer + LeakSanitizer and runs them.

This is the path a pure C++ app takes (no Python): CMake finds llama.cpp in the installed
llama-cpp-python package.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from bua.backbones import smollm2_gguf_path

ROOT = Path(__file__).resolve().parents[1]


def _cmake() -> str:
    venv_cmake = Path(sys.executable).with_name("cmake")
    found = str(venv_cmake) if venv_cmake.exists() else shutil.which("cmake")
    if not found:
        pytest.fail("cmake is needed to build the C++ tests (it comes with bua's test extra)")
    return found


@pytest.fixture(scope="module")
def asan_build(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("cpp-asan")
    site = sysconfig.get_paths()["purelib"]
    configure = [
        _cmake(), "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        "-DBUA_BUILD_TESTS=ON", "-DBUA_BUILD_EXAMPLES=OFF", "-DBUA_SANITIZE=ON", f"-DCMAKE_PREFIX_PATH={site}",
    ]
    subprocess.run(configure, check=True, capture_output=True, text=True)
    result = subprocess.run([_cmake(), "--build", str(build), "-j", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return build


def test_cpp_runtime_tests_pass_under_asan_and_lsan(asan_build: Path):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
    result = subprocess.run([str(asan_build / "bua-runtime-tests"), str(smollm2_gguf_path())],
                            capture_output=True, text=True, env=env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "0 failure(s)" in result.stdout
    assert "ERROR: AddressSanitizer" not in output and "ERROR: LeakSanitizer" not in output
