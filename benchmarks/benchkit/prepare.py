"""Builds every model the suites use, before anything is timed:

    python -m benchkit.prepare [--smoke] [--threads N] [--cache DIR]   (cwd: benchmarks/)
"""
from __future__ import annotations

import argparse
import time

from benchkit.artifacts import prepare_all, say
from benchkit.settings import make_settings


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--threads", default=None)
    ap.add_argument("--cache", default=None)
    args = ap.parse_args(argv)
    s = make_settings(args.smoke, args.threads, args.cache)
    t0 = time.monotonic()
    prepare_all(s)
    say(f"all models ready under {s.cache} ({time.monotonic() - t0:.0f}s)")


if __name__ == "__main__":
    main()
