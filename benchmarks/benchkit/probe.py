"""Peak RSS of one side, measured in a fresh process (`python -m benchkit.probe ...`).

The process imports what its side needs, loads the model, runs N predictions on the fixed
histories, and prints one JSON line: peak RSS, RSS after imports and after loading, and whether
torch was imported (the on-device side must not import it).

Peak RSS is /proc/self/status VmHWM, the high-water mark of this process image. Not
getrusage's ru_maxrss: Linux carries the forked parent's high-water mark into it across exec,
so a child of a large benchmark process would report the parent's peak.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: peak RSS needs Linux")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("side", choices=["native", "torch", "decode"])
    ap.add_argument("--gguf", type=Path, help="decode: the GGUF")
    ap.add_argument("--tokens", type=int, default=64, help="decode: tokens decoded after a short prompt")
    ap.add_argument("--bundle", type=Path, help="native: the bundle directory")
    ap.add_argument("--backbone", type=Path, help="torch: the HF checkpoint")
    ap.add_argument("--encoder", type=Path)
    ap.add_argument("--projector", type=Path)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--predictions", type=int, default=3)
    ap.add_argument("--wait-for-go", action="store_true",
                    help="after loading (and one warm-up call) print READY and wait for a line on stdin "
                         "(lets a profiler attach to the workload alone)")
    args = ap.parse_args(argv)

    if args.side == "decode":
        _decode(args.gguf, args.threads, args.tokens, args.wait_for_go)
        return
    from benchkit import workloads

    histories = workloads.histories(args.predictions)
    t0 = time.perf_counter()
    if args.side == "native":
        from bua import OnDevicePredictor

        rss_imports = _rss_mib()
        predictor = OnDevicePredictor.from_bundle(args.bundle, n_threads=args.threads)
        rss_loaded = _rss_mib()
        if args.wait_for_go:
            predictor.predict(histories[0], top_k=1, explain=False)
            _wait_for_go()
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


def _wait_for_go() -> None:
    print("READY", flush=True)
    sys.stdin.readline()


def _decode(gguf: Path, threads: int, n_tokens: int, wait_for_go: bool) -> None:
    """Loads the GGUF and decodes n_tokens one llama_decode each (the profile's workload)."""
    from bua.runtime.native import load_native

    native = load_native()
    model = native.Model.load(str(gguf))
    session = native.Session(model, n_ctx=64 + n_tokens, n_threads=threads)
    ids = list(model.tokenize("Mon 08:10 @home check weather\n" * 8, False, True))
    session.eval_tokens(ids[:32])
    if wait_for_go:
        _wait_for_go()
    t0 = time.perf_counter()
    for t in (ids * (1 + n_tokens // len(ids)))[:n_tokens]:
        session.eval_tokens([t])
    print(json.dumps({"side": "decode", "tokens_per_s": n_tokens / (time.perf_counter() - t0)}))


def probe_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS is in no measured path (see conftest.py)
    return env


def run_probe(side: str, threads: int, predictions: int, **paths: Path) -> dict:
    """Runs the probe in a subprocess and returns its JSON (raises with its stderr on failure)."""
    cmd = [sys.executable, "-m", "benchkit.probe", side, "--threads", str(threads),
           "--predictions", str(predictions)]
    for key, value in paths.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.run(cmd, cwd=BENCH_DIR, env=probe_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS probe {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
