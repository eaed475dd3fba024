"""Runs the on-device BUA benchmark suites and writes benchmarks/README.md + results.png.

    python benchmarks/report.py            # the full run (see README for its duration)
    python benchmarks/report.py --smoke --out-dir /tmp/bench-smoke   # tiny models, quick check

Steps: build (or reuse) every model under the cache (`benchkit.prepare`, not timed), run
`pytest benchmarks -m bua_compare --benchmark-json=...` in a subprocess with an explicit
thread count, then render the README (tables, ratios, goals, explanations) and the plot from
that JSON alone. The JSON is kept as results.json next to the README.

Run it on an idle machine: ggml spin-waits, so any other CPU work distorts every number
(the README records the load average and warns when it was high).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from benchkit.goals import evaluate  # noqa: E402
from benchkit.machine import describe, git_commit  # noqa: E402
from benchkit.plot import write_plot  # noqa: E402
from benchkit.recorder import SideRecord  # noqa: E402
from benchkit.report_md import render  # noqa: E402
from benchkit.settings import resolve_threads  # noqa: E402


class LoadSampler(threading.Thread):
    """Samples the 1-minute load average every few seconds while the suites run."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every_s, self.max = every_s, os.getloadavg()[0]
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            self.max = max(self.max, os.getloadavg()[0])

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return max(self.max, os.getloadavg()[0])


def cpu_times() -> list[int]:
    """The aggregate 'cpu' line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def steal_percent(before: list[int], after: list[int]) -> float:
    """CPU time the hypervisor gave to other guests between two samples, % of all CPU time."""
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta[:8])
    return 100.0 * delta[7] / total if total and len(delta) > 7 else float("nan")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS is in no measured path (see conftest.py)
    return env


def _run(cmd: list[str], cwd: Path) -> None:
    print("+ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=cwd, env=_env())
    if proc.returncode != 0:
        raise SystemExit(f"report: {cmd[2] if len(cmd) > 2 else cmd[0]} failed with exit code {proc.returncode}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny stand-in models, one round per side")
    ap.add_argument("--threads", default=None, help="thread count (default: min(2, free cores))")
    ap.add_argument("--cache", default=None, help="model cache (default: <bua cache>/bench)")
    ap.add_argument("--out-dir", type=Path, default=BENCH_DIR, help="where README.md, results.png, results.json go")
    ap.add_argument("--skip-prepare", action="store_true", help="do not build missing models first")
    ap.add_argument("--render-only", action="store_true",
                    help="only re-render README.md and results.png from OUT_DIR/results.json")
    ap.add_argument("--pytest-args", default="", help="extra pytest arguments, e.g. \"-k 'not torch'\"")
    args = ap.parse_args(argv)

    if args.render_only:
        render_outputs(args.out_dir)
        return
    threads = resolve_threads(args.threads)
    common = (
        ["--threads", str(threads)]
        + (["--smoke"] if args.smoke else [])
        + (["--cache", args.cache] if args.cache else [])
    )
    if not args.skip_prepare:
        _run([sys.executable, "-m", "benchkit.prepare", *common], BENCH_DIR)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.out_dir / "results.json"
    machine = describe(REPO)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(BENCH_DIR),
        "-m",
        "bua_compare",
        "-p",
        "no:cacheprovider",
        f"--bench-threads={threads}",
        f"--benchmark-json={json_path}",
        "-q",
        "-rN",
    ]
    cmd += ["--bench-smoke"] if args.smoke else []
    cmd += [f"--bench-cache={args.cache}"] if args.cache else []
    cmd += shlex.split(args.pytest_args)
    sampler = LoadSampler()
    sampler.start()
    t0 = time.monotonic()
    stat0 = cpu_times()
    try:
        _run(cmd, REPO)
    finally:
        load_max = sampler.stop()
    steal = steal_percent(stat0, cpu_times())
    given = sys.argv[1:] if argv is None else argv
    data = json.loads(json_path.read_text())
    data["bua_run"] = {
        "command": " ".join(["python benchmarks/report.py", *map(shlex.quote, given)]),
        "smoke": args.smoke,
        "threads": threads,
        "machine": machine,
        "load_start": machine["load_start"],
        "load_end": os.getloadavg(),
        "load_max": load_max,
        "own_load": threads,
        "steal_pct": steal,
        "seconds": time.monotonic() - t0,
    }
    json_path.write_text(json.dumps(data, indent=2))
    render_outputs(args.out_dir)


def render_outputs(out_dir: Path) -> None:
    """README.md and results.png from out_dir/results.json (as written by a run of this command)."""
    json_path = out_dir / "results.json"
    if not json_path.is_file():
        raise SystemExit(f"report: {json_path} not found; run the suites first (without --render-only)")
    data = json.loads(json_path.read_text())
    if "bua_run" not in data:
        raise SystemExit(f"report: {json_path} was not written by report.py (no 'bua_run' section)")
    run = dict(data["bua_run"])
    run["rendered_commit"] = git_commit(REPO)
    records = [SideRecord.from_json(b) for b in data["benchmarks"]]
    labels = {b["extra_info"]["model"]: b["extra_info"]["model_label"] for b in data["benchmarks"]}
    (out_dir / "README.md").write_text(render(records, run, labels))
    machine = run["machine"]
    title = f"on-device BUA, {run['threads']} thread(s), {machine['cpu']}, {machine['date']}" + (
        " — SMOKE" if run["smoke"] else ""
    )
    write_plot(evaluate(records), records, out_dir / "results.png", title)
    print(f"wrote {out_dir / 'README.md'}, {out_dir / 'results.png'} from {json_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
