"""scripts/llama_build.py: the llama.cpp build chosen per CPU, and the checks on what is installed."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("llama_build", ROOT / "scripts" / "llama_build.py")
lb = importlib.util.module_from_spec(spec)
sys.modules["llama_build"] = lb
spec.loader.exec_module(lb)

# /proc/cpuinfo flags of the two machine kinds this project has met.
EPYC = frozenset(("fpu sse4_2 pni ssse3 fma avx f16c avx2 bmi2 avx512f avx512dq avx512ifma avx512cd "
                  "avx512bw avx512vl avx512_bf16 avx512vbmi avx512vbmi2 avx512_vnni avx512_bitalg").split())
XEON_AMX = EPYC | frozenset("avx_vnni avx512_fp16 amx_tile amx_int8 amx_bf16".split())
HASWELL = frozenset("fpu sse4_2 pni ssse3 fma avx f16c avx2 bmi2".split())
AMX_BUILD_INFO = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
                  "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
                  "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")


def _switches(args):
    return dict(re.fullmatch(r"-D(\w+)=(\w+)", a).groups() for a in args)


def test_pin_matches_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert pyproject.count(f'llama-cpp-python=={lb.LLAMA_CPP_PYTHON}"') == 2  # build and run time


def test_amx_cpu_gets_avx512_but_never_amx():
    switches = _switches(lb.cmake_args(XEON_AMX))
    assert switches["GGML_NATIVE"] == "OFF"  # -march=native would compile the AMX backend in
    assert all(switches[o] == "OFF" for o in lb.FORBIDDEN)
    for option in ("GGML_AVX2", "GGML_AVX512", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", "GGML_AVX_VNNI"):
        assert switches[option] == "ON", option


def test_each_cpu_gets_exactly_its_instruction_sets():
    epyc = _switches(lb.cmake_args(EPYC))
    assert epyc["GGML_AVX512_BF16"] == "ON" and epyc["GGML_AVX_VNNI"] == "OFF"
    haswell = _switches(lb.cmake_args(HASWELL))
    assert haswell["GGML_AVX2"] == "ON" and haswell["GGML_FMA"] == "ON"
    assert all(haswell[o] == "OFF" for o in haswell if o.startswith("GGML_AVX512"))
    assert lb.expected_info(HASWELL) == {"SSE3", "SSSE3", "AVX", "AVX2", "FMA", "F16C", "BMI2"}


def test_build_problems_name_amx_and_missing_instruction_sets():
    assert lb.build_problems(AMX_BUILD_INFO, XEON_AMX) == [
        "AMX_INT8: ggml's AMX backend is compiled in (crashes with SIGILL)"]
    on_haswell = lb.build_problems(AMX_BUILD_INFO, HASWELL)
    assert any(p.startswith("AVX512: this CPU lacks avx512f") for p in on_haswell)
    assert any(p.startswith("AVX_VNNI:") for p in on_haswell)


def test_wheels_are_keyed_by_flags_and_cpu_off_x86():
    assert lb.tag(lb.cmake_args(EPYC), EPYC, True) != lb.tag(lb.cmake_args(XEON_AMX), XEON_AMX, True)
    assert lb.tag(lb.cmake_args(EPYC), EPYC, True) == lb.tag(lb.cmake_args(EPYC), EPYC | {"sha_ni"}, True)
    arm_a, arm_b = frozenset({"fp", "asimd"}), frozenset({"fp", "asimd", "asimddp"})
    assert lb.tag([], arm_a, False) != lb.tag([], arm_b, False)


def test_an_installed_build_with_other_flags_is_replaced(tmp_path, monkeypatch):
    # What a pip cache can hand back: llama-cpp-python 0.3.36 compiled with -march=native on an
    # AMX machine. The plan must not accept it, whatever pip's cache holds.
    monkeypatch.setenv("BUA_WHEELHOUSE", str(tmp_path / "wheels"))
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    plan = lb.make_plan(flags=XEON_AMX, x86=True, installed_info=AMX_BUILD_INFO)
    assert not plan.installed_matches()
    assert plan.wheel is None  # nothing built for these flags yet: setup compiles
    command = lb.pip_wheel_command(plan, tmp_path / "out")
    assert "--no-cache-dir" in command and command[command.index("--no-binary") + 1] == "llama-cpp-python"
    # A build for another CPU's flags (no AVX-512) also differs from what this CPU should get.
    haswell_build = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | REPACK = 1 |"
    assert not lb.make_plan(flags=EPYC, x86=True, installed_info=haswell_build).installed_matches()
    exact = AMX_BUILD_INFO.replace("AMX_INT8 = 1 | ", "").replace("AVX_VNNI = 1 | ", "")
    assert lb.make_plan(flags=EPYC, x86=True, installed_info=exact).installed_matches()


def test_a_wheel_in_the_wheelhouse_is_only_reused_for_its_own_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("BUA_WHEELHOUSE", str(tmp_path))
    epyc = lb.make_plan(flags=EPYC, x86=True, installed_info="")
    epyc.folder.mkdir(parents=True)
    (epyc.folder / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    assert lb.make_plan(flags=EPYC, x86=True, installed_info="").wheel is not None
    assert lb.make_plan(flags=XEON_AMX, x86=True, installed_info="").wheel is None


@pytest.mark.skipif(not lb.is_x86(), reason="x86 instruction sets")
def test_installed_llama_cpp_is_the_build_setup_makes_for_this_cpu():
    # Native tuning kept (every SIMD set this CPU has) and nothing more, AMX never.
    plan = lb.make_plan()
    assert plan.installed_info, "llama-cpp-python is not importable"
    built = lb.parse_system_info(plan.installed_info) & lb.X86_INFO_NAMES
    assert built == lb.expected_info(plan.flags), (lb.cpu_model(), plan.installed_info)
    assert plan.installed_matches()


def test_show_runs_without_bua_installed():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "llama_build.py"), "show"],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    assert '"cmake_args"' in out


def test_ensure_replaces_a_foreign_build_with_the_wheelhouse_wheel(tmp_path, monkeypatch, capsys):
    # The installed llama-cpp-python is an AMX build (e.g. what pip's cache returned); the
    # wheelhouse holds this CPU's wheel: ensure installs that one and checks the result.
    monkeypatch.setenv("BUA_WHEELHOUSE", str(tmp_path))
    good = AMX_BUILD_INFO.replace("AMX_INT8 = 1 | ", "").replace("AVX_VNNI = 1 | ", "")
    installed = {"info": AMX_BUILD_INFO}
    monkeypatch.setattr(lb, "cpu_flags", lambda cpuinfo=None: EPYC)
    monkeypatch.setattr(lb, "is_x86", lambda: True)
    monkeypatch.setattr(lb, "installed_system_info", lambda python=sys.executable: installed["info"])
    folder = lb.make_plan().folder
    folder.mkdir(parents=True)
    wheel = folder / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    wheel.write_bytes(b"")
    built, installs = [], []
    monkeypatch.setattr(lb, "build_wheel", lambda plan: built.append(plan) or wheel)
    monkeypatch.setattr(lb, "install", lambda w: installs.append(w) or installed.update(info=good))
    assert lb.ensure() == 0
    assert installs == [wheel] and built == []
    assert "AMX_INT8: ggml's AMX backend is compiled in" in capsys.readouterr().out
    # Now it matches: a second run installs nothing.
    assert lb.ensure() == 0 and installs == [wheel]
    # A wheel that still installs the wrong build is an error that says what to delete.
    installed["info"] = AMX_BUILD_INFO
    monkeypatch.setattr(lb, "install", lambda w: None)
    assert lb.ensure() == 1
    assert f"delete {folder}" in capsys.readouterr().err


def test_off_x86_the_installed_build_must_be_the_one_this_folder_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("BUA_WHEELHOUSE", str(tmp_path))
    arm = frozenset({"fp", "asimd", "asimddp"})
    plan = lb.make_plan(flags=arm, x86=False, installed_info="CPU : NEON = 1 | DOTPROD = 1 |")
    assert plan.args == [] and not plan.installed_matches()
    plan.folder.mkdir(parents=True)
    (plan.folder / "system_info.txt").write_text("CPU : NEON = 1 | DOTPROD = 1 |")
    assert plan.installed_matches()
    other = lb.make_plan(flags=arm, x86=False, installed_info="CPU : NEON = 1 | DOTPROD = 1 | SVE = 1 |")
    assert not other.installed_matches()
