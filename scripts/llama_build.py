"""Installs the llama.cpp build bua runs on: this CPU's SIMD kernels, never ggml's AMX backend.

Standard library only: scripts/setup.sh runs it inside .venv before bua itself is installed.

    python scripts/llama_build.py show     # CPU, chosen CMake flags, wheel, installed build
    python scripts/llama_build.py ensure   # make the installed llama-cpp-python match them

Why explicit flags instead of llama.cpp's default `-march=native` (docs/ON_DEVICE.md has the
long form): `-march=native` compiles ggml's AMX backend in on Intel CPUs that have AMX, and that
backend dies with SIGILL; a native build also records nothing a runtime check could compare
with the CPU. With GGML_NATIVE=OFF and one GGML_<ISA> switch per instruction set this CPU
reports, the build uses exactly the listed instruction sets, llama.cpp's system info names each
of them, and bua's runtime can refuse a build that asks for more than the CPU has.

pip caches a wheel it built from the llama-cpp-python sdist under a key that ignores CMAKE_ARGS,
so a wheel built with other flags could come back silently. This script never lets pip's cache
take part: it builds with --no-cache-dir into its own wheelhouse, one folder per flag set, and
after installing it checks the library that Python actually loads.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"  # the pin in pyproject.toml (a test keeps the two equal)


@dataclass(frozen=True)
class Isa:
    """One x86 instruction set as ggml's CMake, llama.cpp's system info and the CPU name it."""

    option: str            # ggml CMake switch
    info_name: str         # name in llama_print_system_info() ("" when it prints none)
    cpu_flags: tuple       # /proc/cpuinfo flags the CPU must report for it


X86_ISAS = (
    Isa("GGML_SSE42", "", ("sse4_2",)),
    Isa("GGML_AVX", "AVX", ("avx",)),
    Isa("GGML_AVX2", "AVX2", ("avx2",)),
    Isa("GGML_FMA", "FMA", ("fma",)),
    Isa("GGML_F16C", "F16C", ("f16c",)),
    Isa("GGML_BMI2", "BMI2", ("bmi2",)),
    Isa("GGML_AVX_VNNI", "AVX_VNNI", ("avx_vnni",)),
    # GGML_AVX512 compiles with -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw.
    Isa("GGML_AVX512", "AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    Isa("GGML_AVX512_VBMI", "AVX512_VBMI", ("avx512vbmi",)),
    Isa("GGML_AVX512_VNNI", "AVX512_VNNI", ("avx512_vnni",)),
    Isa("GGML_AVX512_BF16", "AVX512_BF16", ("avx512_bf16",)),
)
# Instruction sets the system info reports that no switch above sets (implied by SSE4.2/AVX).
IMPLIED_INFO = {"SSE3": ("pni",), "SSSE3": ("ssse3",)}
# Never built: ggml's AMX backend runs tile instructions on threads that did not request
# XTILEDATA permission from the kernel, and crashes (SIGILL in tilezero).
FORBIDDEN = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
FORBIDDEN_INFO = ("AMX_INT8",)
X86_INFO_NAMES = {isa.info_name for isa in X86_ISAS if isa.info_name} | set(IMPLIED_INFO) | set(FORBIDDEN_INFO)


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def cpu_flags(cpuinfo: str | None = None) -> frozenset:
    """The CPU's feature flags (x86 'flags', arm 'Features'), from /proc/cpuinfo text."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "CPU part"):
            return value.strip()
    return platform.machine()


def x86_isas(flags: frozenset) -> list:
    """The instruction sets of X86_ISAS this CPU supports."""
    return [isa for isa in X86_ISAS if all(f in flags for f in isa.cpu_flags)]


def cmake_args(flags: frozenset, x86: bool = True) -> list:
    """CMake arguments for llama.cpp on a CPU with `flags`.

    x86: GGML_NATIVE off and every instruction set switched explicitly, AMX always off.
    Elsewhere (arm64 Linux/macOS): llama.cpp's own defaults, which have no AMX path; the wheel is
    still keyed by the CPU's feature list, so it is never reused on another CPU.
    """
    if not x86:
        return []
    on = {isa.option for isa in x86_isas(flags)}
    args = ["-DGGML_NATIVE=OFF"]
    args += [f"-D{isa.option}={'ON' if isa.option in on else 'OFF'}" for isa in X86_ISAS]
    args += [f"-D{option}=OFF" for option in FORBIDDEN]
    return args


def expected_info(flags: frozenset) -> frozenset:
    """The x86 instruction-set names llama.cpp's system info must report for cmake_args(flags)."""
    names = {isa.info_name for isa in x86_isas(flags) if isa.info_name}
    names |= {name for name, need in IMPLIED_INFO.items() if all(f in flags for f in need)}
    return frozenset(names)


def parse_system_info(info: str) -> frozenset:
    """Names set to 1 in llama_print_system_info() ('CPU : SSE3 = 1 | AVX = 1 | ...')."""
    return frozenset(m.group(1) for m in re.finditer(r"([A-Z0-9_]+) = 1\b", info))


def build_problems(info: str, flags: frozenset) -> list:
    """Why a llama.cpp build with system info `info` must not run on a CPU with `flags` ([] = ok)."""
    built = parse_system_info(info)
    problems = [f"{name}: ggml's AMX backend is compiled in (crashes with SIGILL)"
                for name in FORBIDDEN_INFO if name in built]
    need = {isa.info_name: isa.cpu_flags for isa in X86_ISAS if isa.info_name}
    need.update(IMPLIED_INFO)
    for name in sorted(built & set(need)):
        missing = [f for f in need[name] if f not in flags]
        if missing:
            problems.append(f"{name}: this CPU lacks {', '.join(missing)}")
    return problems


def tag(args: list, flags: frozenset, x86: bool) -> str:
    """Names one build: llama-cpp-python version, Python ABI, platform, flags (and, off x86, the CPU)."""
    key = {
        "llama-cpp-python": LLAMA_CPP_PYTHON,
        "python": sys.implementation.cache_tag,
        "platform": sysconfig.get_platform(),
        "cmake_args": args,
        "cpu": [] if x86 else sorted(flags),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def wheelhouse() -> Path:
    root = os.environ.get("BUA_WHEELHOUSE")
    if root:
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bua" / "wheels"


def installed_system_info(python: str = sys.executable) -> str | None:
    """llama.cpp's system info as the installed llama-cpp-python loads it, None if not installed."""
    code = ("import sys, llama_cpp; "
            "sys.stdout.write(llama_cpp.llama_print_system_info().decode())")
    run = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return run.stdout if run.returncode == 0 else None


@dataclass
class Plan:
    flags: frozenset
    x86: bool
    args: list
    folder: Path             # wheelhouse folder for this build
    installed_info: str | None

    @property
    def wheel(self) -> Path | None:
        wheels = sorted(self.folder.glob("llama_cpp_python-*.whl")) if self.folder.is_dir() else []
        return wheels[0] if wheels else None

    def installed_matches(self) -> bool:
        """The installed build is exactly the one cmake_args() asks for (and safe on this CPU)."""
        if self.installed_info is None:
            return False
        if not self.x86:  # no ISA names to compare: the system info this folder's wheel installed
            recorded = self.folder / "system_info.txt"
            return recorded.is_file() and recorded.read_text() == self.installed_info
        built = parse_system_info(self.installed_info) & X86_INFO_NAMES
        return built == expected_info(self.flags) and not build_problems(self.installed_info, self.flags)


def make_plan(flags: frozenset | None = None, x86: bool | None = None,
              installed_info: str | None = None, python: str = sys.executable) -> Plan:
    flags = cpu_flags() if flags is None else flags
    x86 = is_x86() if x86 is None else x86
    args = cmake_args(flags, x86)
    folder = wheelhouse() / f"llama-cpp-python-{LLAMA_CPP_PYTHON}-{tag(args, flags, x86)}"
    if installed_info is None:
        installed_info = installed_system_info(python)
    return Plan(flags, x86, args, folder, installed_info)


def pip_wheel_command(plan: Plan, out: Path) -> list:
    # --no-cache-dir: pip's wheel cache is keyed by the sdist alone, not by CMAKE_ARGS.
    return [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
            "--no-binary", "llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-w", str(out)]


def build_wheel(plan: Plan) -> Path:
    """Compiles llama-cpp-python with plan.args into the wheelhouse (atomically: a killed build leaves no folder)."""
    plan.folder.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CMAKE_ARGS=" ".join(plan.args), FORCE_CMAKE="1")
    print(f"[setup] compiling llama-cpp-python {LLAMA_CPP_PYTHON} for this CPU "
          f"({cpu_model()}), about 10 minutes on 2 cores", flush=True)
    print(f"[setup]   CMAKE_ARGS={env['CMAKE_ARGS'] or '(llama.cpp defaults)'}", flush=True)
    with tempfile.TemporaryDirectory(dir=plan.folder.parent, prefix=f".{plan.folder.name}.tmp-") as tmp:
        stage = Path(tmp) / plan.folder.name
        stage.mkdir()
        subprocess.run(pip_wheel_command(plan, stage), env=env, check=True)
        (stage / "build.json").write_text(json.dumps(
            {"cmake_args": plan.args, "cpu": cpu_model(), "cpu_flags": sorted(plan.flags)}, indent=1))
        stage.rename(plan.folder)
    return plan.wheel


def install(wheel: Path) -> None:
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir"]
    subprocess.run(pip + ["--force-reinstall", "--no-deps", str(wheel)], check=True)
    subprocess.run(pip + [str(wheel)], check=True)  # its own dependencies, if missing


def ensure() -> int:
    plan = make_plan()
    if plan.installed_matches():
        print(f"[setup] llama.cpp build matches this CPU ({cpu_model()}): {plan.folder.name}")
        return 0
    if plan.installed_info is not None:
        problems = build_problems(plan.installed_info, plan.flags) or ["built with other flags"]
        print(f"[setup] replacing the installed llama-cpp-python: {'; '.join(problems)}")
    wheel = plan.wheel
    if wheel is None:
        wheel = build_wheel(plan)
    else:
        print(f"[setup] llama-cpp-python wheel for this CPU from {plan.folder}")
    install(wheel)
    after = make_plan()
    if not plan.x86:
        (plan.folder / "system_info.txt").write_text(after.installed_info or "")
    elif not after.installed_matches():
        got = sorted(parse_system_info(after.installed_info or "") & X86_INFO_NAMES)
        print(f"[setup] error: the installed llama.cpp reports {got}, expected "
              f"{sorted(expected_info(plan.flags))}; delete {plan.folder} and rerun", file=sys.stderr)
        return 1
    print(f"[setup] llama.cpp installed: {', '.join(sorted(parse_system_info(after.installed_info or '')))}")
    return 0


def show() -> int:
    plan = make_plan()
    print(json.dumps({
        "cpu": cpu_model(),
        "cmake_args": plan.args,
        "expected_system_info": sorted(expected_info(plan.flags)) if plan.x86 else None,
        "wheel": str(plan.wheel) if plan.wheel else None,
        "wheelhouse_folder": str(plan.folder),
        "installed_system_info": plan.installed_info,
        "installed_matches": plan.installed_matches(),
        "installed_problems": build_problems(plan.installed_info or "", plan.flags),
    }, indent=1))
    return 0


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["ensure", "show"])
    args = parser.parse_args(argv)
    return ensure() if args.command == "ensure" else show()


if __name__ == "__main__":
    sys.exit(main())
