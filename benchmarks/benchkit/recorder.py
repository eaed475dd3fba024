"""One row per benchmarked side: timing statistics and the side's metrics.

`run_side` is the one way the suites time something: a warm-up call (untimed) sizes the number
of rounds to the per-side budget, then pytest-benchmark's `pedantic` times the rounds. The
side's identity and metrics go into `benchmark.extra_info` (and so into --benchmark-json, which
`report.py` reads); the same row is kept in memory for the end-of-run ratio summary.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from benchkit.settings import Settings


@dataclass
class SideRecord:
    comparison: str
    model: str
    side: str
    role: str                    # "bua", "baseline" or "point" (a side without a counterpart)
    label: str
    median_s: float = float("nan")
    q1_s: float = float("nan")
    q3_s: float = float("nan")
    min_s: float = float("nan")
    max_s: float = float("nan")
    rounds: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    def value(self, metric: str) -> float:
        if metric == "time":
            return self.median_s
        v = self.metrics.get(metric)
        return float("nan") if v is None else float(v)

    @classmethod
    def from_json(cls, bench: dict) -> "SideRecord":
        info = dict(bench.get("extra_info") or {})
        stats = bench.get("stats") or {}
        keys = ("comparison", "model", "side", "role", "label")
        rec = cls(*(str(info.pop(k)) for k in keys))
        info.pop("model_label", None)
        rec.metrics = info
        if stats:
            rec.median_s, rec.q1_s, rec.q3_s = stats["median"], stats["q1"], stats["q3"]
            rec.min_s, rec.max_s, rec.rounds = stats["min"], stats["max"], int(stats["rounds"])
        return rec


class Recorder:
    def __init__(self) -> None:
        self.records: list[SideRecord] = []
        self.model_labels: dict[str, str] = {}


def _stats(times: list[float], rec: SideRecord) -> None:
    a = np.asarray(times, dtype=float)
    rec.median_s = float(np.median(a))
    rec.q1_s, rec.q3_s = (float(x) for x in np.percentile(a, [25, 75]))
    rec.min_s, rec.max_s, rec.rounds = float(a.min()), float(a.max()), len(a)


def run_side(benchmark, settings: Settings, recorder: Recorder, *, comparison: str, model: str,
             model_label: str, side: str, role: str, label: str, fn: Callable[[], Any],
             setup: Callable[[], None] | None = None, metrics: dict[str, Any] | None = None) -> SideRecord:
    """Times fn() as one side of a comparison and records it; returns the record, whose
    `metrics` the caller may extend (they are stored at the end of the test)."""
    times: list[float] = []

    def target() -> None:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)

    if setup is not None:
        setup()
    if settings.smoke:
        rounds = 1
    else:
        target()  # warm-up: page in weights, size the rounds; not part of the statistics
        rounds = settings.rounds_for(times[0])
        times.clear()
    rec = SideRecord(comparison, model, side, role, label, metrics=dict(metrics or {}))
    recorder.model_labels[model] = model_label
    benchmark.group = f"{comparison} {model}"
    benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
    _stats(times, rec)
    rec.metrics.setdefault("threads", settings.threads)
    benchmark.extra_info.update(comparison=comparison, model=model, model_label=model_label,
                                side=side, role=role, label=label)
    benchmark.extra_info.update(rec.metrics)
    recorder.records.append(rec)
    return rec


class Cycler:
    """Calls fn(item) on items in turn, keeping each item's latest result (so checks after the
    timing reuse the timed calls instead of running more)."""

    def __init__(self, items: list, fn: Callable[[Any], Any]) -> None:
        self.items, self.fn = items, fn
        self.results: dict[int, Any] = {}
        self._next = 0

    def __call__(self) -> Any:
        i = self._next
        self._next = (i + 1) % len(self.items)
        self.results[i] = self.fn(self.items[i])
        return self.results[i]

    def result(self, i: int = 0) -> Any:
        """The latest result for item i, computing it if the timed rounds never reached it."""
        if i not in self.results:
            self.results[i] = self.fn(self.items[i])
        return self.results[i]


def finish(benchmark, rec: SideRecord) -> None:
    """Stores metrics added to `rec` after run_side into the benchmark's JSON too."""
    benchmark.extra_info.update(rec.metrics)
