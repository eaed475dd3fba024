"""What the report states about the run: machine (from /proc), threads, date, commit, load."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def _proc_field(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_flags() -> list[str]:
    flags = _proc_field("/proc/cpuinfo", "flags").split()
    return [f for f in ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags]


def git_commit(repo: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + (" (working tree has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe(repo: Path) -> dict:
    mem_kib = _proc_field("/proc/meminfo", "MemTotal").split()[0]
    try:
        from bua.runtime.native import load_native

        info = load_native().build_info()
        llama = f"llama-cpp-python {info['llama_cpp_python']}; {info['system_info'].strip()}"
    except Exception as exc:  # the report still says what it could not find
        llama = f"unavailable ({exc})"
    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name"),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": round(int(mem_kib) / 2**20, 1) if mem_kib.isdigit() else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "llama": llama,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": git_commit(repo),
        "load_start": os.getloadavg(),
    }
