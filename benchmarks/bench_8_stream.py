"""Comparison 8: streaming prediction. An app predicts after every new event of one user's log:
`PredictionStream.append` (evaluates the new soft row and the question; the KV cache keeps the
rest) vs a fresh `predict(window, explain=False)` of the same window each time. One timed call
is a whole pass over the log, so the ratio is the per-event speed-up.

- growing: a window filling from 8 to 40 events (32 appends, no drops);
- log: a log 4x the window (window 20, 80 events, drop_block 5): every fifth append after the
  window is full re-evaluates it (the drop), the others are incremental.
"""
from __future__ import annotations

import pytest
from benchkit import artifacts
from benchkit.recorder import finish, run_side
from benchkit.workloads import stream_log

from bua.runtime.predictor import stream_window

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY]
# name -> (events already there, events in the log, window, drop_block)
WORKLOADS = {"growing": (8, 40, 40, 10), "log": (20, 80, 20, 5)}


def _windows(log: list, start: int, window: int, drop_block: int) -> list[list]:
    """The window after each append, by the stream's policy (what the fresh side predicts on)."""
    out, current = [], list(log[:start])
    for event in log[start:]:
        current = stream_window(current + [event], window, drop_block)
        out.append(current)
    return out


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("model", MODELS)
def test_stream_append(benchmark, bench, recorder, models, model, workload):
    start, n, window, drop_block = WORKLOADS[workload]
    p = models.predictor(model, "q4_k_m")
    log = stream_log(n)
    top1 = []

    def one_pass() -> None:
        stream = p.stream(log[:start], top_k=5, window=window, drop_block=drop_block)
        top1[:] = [stream.append(e).behavior for e in log[start:]]

    rec = run_side(benchmark, bench, recorder, comparison="8", model=model, model_label=models.info(model).label,
                   side=f"stream_{workload}", role="bua", label=f"stream.append, {n - start} events (window {window})",
                   fn=one_pass)
    rec.metrics.update(events=n - start, ms_per_event=1000 * rec.median_s / (n - start))
    want = [p.predict(w, top_k=5, explain=False).behavior for w in _windows(log, start, window, drop_block)]
    rec.metrics["top1_agreement_with_fresh"] = sum(a == b for a, b in zip(top1, want)) / len(want)
    finish(benchmark, rec)


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("model", MODELS)
def test_fresh_predict(benchmark, bench, recorder, models, model, workload):
    start, n, window, drop_block = WORKLOADS[workload]
    p = models.predictor(model, "q4_k_m")
    windows = _windows(stream_log(n), start, window, drop_block)

    def one_pass() -> None:
        for w in windows:
            p.predict(w, top_k=5, explain=False)

    rec = run_side(benchmark, bench, recorder, comparison="8", model=model, model_label=models.info(model).label,
                   side=f"fresh_{workload}", role="baseline",
                   label=f"predict(window) per event, {n - start} events (window {window})", fn=one_pass)
    rec.metrics.update(events=n - start, ms_per_event=1000 * rec.median_s / (n - start))
    finish(benchmark, rec)
