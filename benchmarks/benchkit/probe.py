"""Peak RSS of one side, measured in a fresh process (`python -m benchkit.probe ...`).

The process imports what its side needs, loads the model, runs N predictions on the fixed
histories, and prints one JSON line: peak RSS (getrusage ru_maxrss), RSS after imports and
after loading, and whether torch was imported (the on-device side must not import it).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("side", choices=["native", "torch"])
    ap.add_argument("--bundle", type=Path, help="native: the bundle directory")
    ap.add_argument("--backbone", type=Path, help="torch: the HF checkpoint")
    ap.add_argument("--encoder", type=Path)
    ap.add_argument("--projector", type=Path)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--predictions", type=int, default=3)
    args = ap.parse_args(argv)

    from benchkit import workloads

    histories = workloads.histories(args.predictions)
    t0 = time.perf_counter()
    if args.side == "native":
        from bua import OnDevicePredictor

        rss_imports = _rss_mib()
        predictor = OnDevicePredictor.from_bundle(args.bundle, n_threads=args.threads)
        rss_loaded = _rss_mib()
        tops = [predictor.predict(h, top_k=1, explain=False).behavior for h in histories]
    else:
        import torch  # noqa: F401  (imported on purpose: part of this side's footprint)
        import transformers  # noqa: F401

        from benchkit.artifacts import dataset
        from benchkit.torchside import TorchPredictor

        rss_imports = _rss_mib()
        predictor = TorchPredictor(args.backbone, args.encoder, args.projector, dataset().vocab, args.threads)
        rss_loaded = _rss_mib()
        tops = [predictor.top(h, 1)[0] for h in histories]
    print(json.dumps({
        "side": args.side,
        "peak_rss_mib": _peak_mib(),
        "rss_after_imports_mib": rss_imports,
        "rss_after_load_mib": rss_loaded,
        "rss_end_mib": _rss_mib(),
        "torch_imported": "torch" in sys.modules,
        "predictions": len(tops),
        "seconds": time.perf_counter() - t0,
    }))


def run_probe(side: str, threads: int, predictions: int, **paths: Path) -> dict:
    """Runs the probe in a subprocess and returns its JSON (raises with its stderr on failure)."""
    cmd = [sys.executable, "-m", "benchkit.probe", side, "--threads", str(threads),
           "--predictions", str(predictions)]
    for key, value in paths.items():
        cmd += [f"--{key}", str(value)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(cmd, cwd=BENCH_DIR, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS probe {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
