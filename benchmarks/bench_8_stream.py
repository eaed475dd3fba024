"""Comparison 8: streaming prediction. An app predicts after every new event of one user's log:
`PredictionStream.append` (evaluates the new soft row and the question; the KV cache keeps the
rest) vs a fresh `predict(window, explain=False)` of the same window each time. One timed call
is a whole pass over the log, so the ratio is the per-event speed-up.

- growing: a window filling from 8 to 40 events (32 appends, no drops);
- log: a log 4x the window (window 20, 80 events, drop_block 5): every fifth append after the
  window is full re-evaluates it (the drop), the others are incremental.

Both sides score the behaviors as `OnDevicePredictor` does by default (best first, until the
rest cannot matter); a third side is the fresh `predict` scoring every behavior
(`score_tolerance=0`, the fast path before the shortlist).
"""
from __future__ import annotations

import pytest
from benchkit import artifacts
from benchkit.recorder import finish, run_side
from benchkit.workloads import stream_log

from bua.runtime.predictor import stream_window

pytestmark = pytest.mark.bua_compare
# the trained bundle only when the run was given one (--bench-trained-bundle): the untrained
# bundles' candidate scores are near ties, so they show what the shortlist saves at worst
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY, artifacts.TRAINED_KEY]


def _predictor(models, bench, model: str, score_tolerance: float | None = None):
    if model == artifacts.TRAINED_KEY and bench.trained_bundle is None:
        pytest.skip("no trained bundle given (--bench-trained-bundle)")
    return models.predictor(model, "q4_k_m", score_tolerance=score_tolerance)


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
    p = _predictor(models, bench, model)
    log = stream_log(n)
    top1, scored = [], []

    def one_pass() -> None:
        stream = p.stream(log[:start], top_k=5, window=window, drop_block=drop_block)
        results = [stream.append(e) for e in log[start:]]
        top1[:] = [r.behavior for r in results]
        scored[:] = [r.scored_behaviors for r in results]

    rec = run_side(benchmark, bench, recorder, comparison="8", model=model, model_label=models.info(model).label,
                   side=f"stream_{workload}", role="bua", label=f"stream.append, {n - start} events (window {window})",
                   fn=one_pass)
    rec.metrics.update(events=n - start, ms_per_event=1000 * rec.median_s / (n - start),
                       behaviors_scored=sum(scored) / len(scored))
    want = [p.predict(w, top_k=5, explain=False).behavior for w in _windows(log, start, window, drop_block)]
    rec.metrics["top1_agreement_with_fresh"] = sum(a == b for a, b in zip(top1, want)) / len(want)
    finish(benchmark, rec)


# scoring -> (OnDevicePredictor's score_tolerance, side prefix, label)
SCORING = {"shortlist": (None, "fresh", "predict(window) per event"),
           "exact": (0.0, "fresh_exact", "predict(window) per event, every behavior scored")}


@pytest.mark.parametrize("scoring", list(SCORING))
@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("model", MODELS)
def test_fresh_predict(benchmark, bench, recorder, models, model, workload, scoring):
    start, n, window, drop_block = WORKLOADS[workload]
    tolerance, side, label = SCORING[scoring]
    p = _predictor(models, bench, model, tolerance)
    windows = _windows(stream_log(n), start, window, drop_block)
    scored = []

    def one_pass() -> None:
        scored[:] = [p.predict(w, top_k=5, explain=False).scored_behaviors for w in windows]

    rec = run_side(benchmark, bench, recorder, comparison="8", model=model, model_label=models.info(model).label,
                   side=f"{side}_{workload}", role="baseline",
                   label=f"{label}, {n - start} events (window {window})", fn=one_pass)
    rec.metrics.update(events=n - start, ms_per_event=1000 * rec.median_s / (n - start),
                       behaviors_scored=sum(scored) / len(scored))
    finish(benchmark, rec)
