"""Quick side-by-side of `stream.append` and a fresh `predict` on the same windows.

    python benchmarks/stream_side_by_side.py BUNDLE [BUNDLE ...] [--scoring constrained|summed]

For each bundle: 4 simulated users' logs, windows growing from 9 to 32 events; every append is
timed first (the stream keeps its KV cache), then a fresh `predict` of each same window. Prints
the medians, their ratio, the positions an append evaluated and the top-1 agreement. A quick
check next to benchmark comparison 8 (bench_8_stream.py), not a replacement for it.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bua import OnDevicePredictor
from bua.dialogue import PREDICT, SCORING_RULES
from bua.simulate import simulate


def main(bundles: list[str], scoring: str) -> None:
    users = simulate(n_users=6, n_days=7, seed=7).users[:4]
    for path in bundles:
        p = OnDevicePredictor.from_bundle(path, n_threads=2, scoring=scoring)
        stream_s, fresh_s, evaluated, windows, tops = [], [], [], [], []
        for user in users:
            log = list(user.events)[:32]
            s = p.stream(log[:8], top_k=5)
            s.append(log[8])
            for event in log[9:]:
                t = time.perf_counter()
                top = s.append(event).top[0].behavior
                stream_s.append(time.perf_counter() - t)
                evaluated.append(s.evaluated)
                windows.append(list(s.events))
                tops.append(top)
        agree = 0
        for window, top in zip(windows, tops):
            t = time.perf_counter()
            agree += p.predict(window, top_k=5, explain=False).top[0].behavior == top
            fresh_s.append(time.perf_counter() - t)
        layout = ("question first" if p.template.question_first else
                  "the prediction's question first" if p.template.asks_first(PREDICT) else "history first")
        stream_ms, fresh_ms = 1e3 * np.median(stream_s), 1e3 * np.median(fresh_s)
        print(f"{path} ({layout}, {scoring} scoring): stream {stream_ms:.0f} ms, fresh {fresh_ms:.0f} ms, "
              f"ratio {fresh_ms / stream_ms:.2f}x, "
              f"positions per append {np.median(evaluated):.0f}, top-1 agreement {agree}/{len(tops)}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", metavar="BUNDLE")
    parser.add_argument("--scoring", choices=SCORING_RULES, default="constrained",
                        help="OnDevicePredictor's scoring rule (default: constrained)")
    args = parser.parse_args()
    main(args.bundles, args.scoring)
