"""Data-layer benchmark (run on demand: ``python -m pytest benchmarks/bench_data.py``).

Builds 100k prediction samples on the simulator with every label and dialogue: for each
sample the five stage-1 dialogues, the stage-2 prediction dialogue (key behaviors ->
patterns -> summary -> predict) and the stage-3 reflection dialogue. Target: under 60 s.
"""
from __future__ import annotations

import time

from bua.labels import Labeler
from bua.samples import prediction_samples
from bua.simulate import simulate
from bua.training.dialogues import stage1_dialogues, stage2_dialogue, stage3_dialogue

N_SAMPLES = 100_000


def build_all(n_samples: int = N_SAMPLES) -> dict:
    t0 = time.perf_counter()
    ds = simulate(300, 28, seed=0)
    t1 = time.perf_counter()
    samples = prediction_samples(ds, history_len=40, stride=2)[:n_samples]
    assert len(samples) == n_samples, len(samples)
    labeler = Labeler(ds)
    t2 = time.perf_counter()
    n_dialogues = 0
    for s in samples:
        n_dialogues += len(stage1_dialogues(s, labeler))
        stage2_dialogue(s, labeler)
        stage3_dialogue(s, labeler)
        n_dialogues += 2
    t3 = time.perf_counter()
    return {"simulate_s": t1 - t0, "samples_s": t2 - t1, "labels_dialogues_s": t3 - t2,
            "total_s": t3 - t0, "n_samples": len(samples), "n_dialogues": n_dialogues,
            "n_events": ds.n_events}


def test_build_100k_prediction_samples_with_labels_and_dialogues(benchmark):
    stats = benchmark.pedantic(build_all, rounds=1, iterations=1)
    benchmark.extra_info.update(stats)
    print(stats)
    assert stats["n_dialogues"] == 7 * N_SAMPLES


if __name__ == "__main__":
    print(build_all())
