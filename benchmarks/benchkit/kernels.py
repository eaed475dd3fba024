"""Where the CPU time goes: a sampling profile (`perf record -e cpu-clock`) of a probe
subprocess, summarised as the top symbols (mostly ggml kernels such as
ggml_vec_dot_q5_0_q8_0). Used by the report's explanations; skipped, with the reason recorded,
where perf is missing or not permitted."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit.probe import BENCH_DIR, probe_env

_LINE = re.compile(r"^\s*(\d+\.\d+)%\s+(\S+)\s+\[([.k])\]\s+(\S+)")


def perf_problem() -> str | None:
    """None if `perf record -e cpu-clock` works here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed"
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", os.path.join(tmp, "p.data"), "true"],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        return f"perf record failed: {proc.stderr.strip()[:200]}"
    return None


def profile_probe(
    args: list[str], top: int = 6, min_percent: float = 1.0
) -> tuple[list[tuple[str, float]], str | None]:
    """Runs `python -m benchkit.probe ARGS --wait-for-go` and attaches perf once the probe has
    loaded its model, so only the workload is sampled; returns [(symbol, percent)] and None, or
    [] and the reason no profile was taken."""
    problem = perf_problem()
    if problem:
        return [], problem
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        probe = subprocess.Popen(
            [sys.executable, "-m", "benchkit.probe", *args, "--wait-for-go"],
            cwd=BENCH_DIR,
            env=probe_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = probe.stdout.readline()
            if line.strip() != "READY":
                probe.kill()
                return [], f"profiled probe did not start: {line.strip()} {probe.stderr.read()[-300:]}"
            perf = subprocess.Popen(
                ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", str(probe.pid), "-o", data],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.5)  # let perf attach before the workload starts
            probe.stdin.write("go\n")
            probe.stdin.flush()
            _, err = probe.communicate(timeout=1800)
            perf_err = perf.communicate(timeout=60)[1]
        finally:
            if probe.poll() is None:
                probe.kill()
        if probe.returncode != 0:
            return [], f"profiled probe failed: {err.strip()[-300:]}"
        if perf.returncode != 0 or not os.path.exists(data):
            return [], f"perf record failed: {perf_err.strip()[-300:]}"
        rep = subprocess.run(
            ["perf", "report", "-i", data, "--sort", "dso,symbol", "--stdio", "--percent-limit", "0.05"],
            capture_output=True,
            text=True,
        )
    totals: dict[str, float] = {}
    for m in map(_LINE.match, rep.stdout.splitlines()):
        if m:
            name = _name(m.group(2), m.group(3), m.group(4))
            totals[name] = totals.get(name, 0.0) + float(m.group(1))
    rows = sorted(((k, v) for k, v in totals.items() if v >= min_percent), key=lambda kv: -kv[1])
    return rows[:top], None if rows else "perf report gave no samples"


def _name(dso: str, space: str, symbol: str) -> str:
    """Symbols without a name (static code, e.g. llamafile's sgemm) are summed per library."""
    if space == "k":
        return "[kernel]"
    if symbol.startswith("0x"):
        return f"{dso} (unnamed code)"
    return _short(symbol)


def _short(symbol: str) -> str:
    """A symbol without template arguments or parameters, at most 48 characters."""
    return re.split(r"[<(]", symbol, maxsplit=1)[0][:48] or symbol[:48]


def describe(rows: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {pct:.0f}%" for name, pct in rows)


def gguf_bytes_by_type(gguf_path: Path) -> dict[str, float]:
    """Share of the GGUF's 2-D weight bytes per tensor type (e.g. {'Q4_K': 0.4, 'Q5_0': 0.35})."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    by: dict[str, int] = {}
    for t in reader.tensors:
        if len([d for d in t.shape if d > 1]) >= 2:
            by[t.tensor_type.name] = by.get(t.tensor_type.name, 0) + int(t.n_bytes)
    total = sum(by.values())
    return {k: v / total for k, v in sorted(by.items(), key=lambda kv: -kv[1])}


def weight_type_metrics(gguf_path: Path) -> dict[str, object]:
    """'weight_types' (display) and 'kquant_share' (bytes in K-quant types) of a GGUF."""
    shares = gguf_bytes_by_type(gguf_path)
    return {
        "weight_types": ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items()),
        "kquant_share": sum(v for k, v in shares.items() if k.endswith("_K")),
    }
