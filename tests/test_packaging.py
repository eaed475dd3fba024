"""The wheel a user installs: one `bua` namespace (training/ and export/ inside it), the native
extension resolving libllama from llama_cpp, console scripts, and a runtime-only install
(numpy + onnxruntime + llama-cpp-python, no torch)."""
from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = out.glob("bua-*.whl")
    return path


def test_wheel_holds_one_namespace_and_the_extension(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("bua/__init__.py", "bua/training/curriculum.py", "bua/training/configs/tiny-cpu.yaml",
                     "bua/training/configs/smollm2-135m-cpu.yaml", "bua/export/cli.py", "bua/runtime/predictor.py"):
        assert expected in names, expected
    assert any(n.startswith("bua/_native") and n.endswith(".so") for n in names)
    assert not any(n.startswith(("training/", "export/")) for n in names), "generic top-level packages"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "bua-export = bua.export.cli:main" in text and "bua = bua.app.cli:main" in text


def test_native_extension_runpath_points_into_llama_cpp(wheel, tmp_path):
    zf = zipfile.ZipFile(wheel)
    so = next(n for n in zf.namelist() if n.startswith("bua/_native") and n.endswith(".so"))
    path = tmp_path / "native.so"
    path.write_bytes(zf.read(so))
    dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    assert "$ORIGIN/../llama_cpp/lib" in dynamic
    assert "libllama.so" in dynamic


def test_runtime_only_install_runs_without_torch(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    check = (
        "import sys, bua, bua._native\n"
        "from bua import OnDevicePredictor\n"
        "from bua.backbones import smollm2_gguf_path\n"
        "assert 'torch' not in sys.modules, 'the runtime imported torch'\n"
        "print(bua._native.build_info()['llama_cpp_python'])\n"
    )
    result = subprocess.run([str(python), "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "0.3.36"
    helped = subprocess.run([str(env_dir / "bin" / "bua-export"), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--quant" in helped.stdout, helped.stderr[-2000:]
    run = subprocess.run([str(env_dir / "bin" / "bua-export"), "--checkpoint", "run", "--out", "bundle"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "pip install 'bua[train,export]'" in run.stderr, run.stderr[-2000:]


def test_curriculum_script_runs_from_a_checkout():
    result = subprocess.run([sys.executable, str(ROOT / "training" / "curriculum.py"), "--help"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "--config" in result.stdout, result.stderr[-2000:]
