"""The comparisons, their ratios and the issue's goals (targets for the report, not asserts).

A ratio is value(num side) / value(den side) of a metric ("time" = median seconds), or one
side's metric alone (den None); `minus_one` turns a time ratio into an overhead. Goals are
"min" (the ratio must reach it) or "max" (must stay at or below it), possibly per model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from benchkit.recorder import SideRecord


@dataclass(frozen=True)
class Ratio:
    name: str
    metric: str
    num: str
    den: str | None
    goal: float | dict[str, float] | None = None
    kind: str = "min"
    minus_one: bool = False
    unit: str = "x"            # "x" (factor) or "%" (fraction shown as percent)

    def goal_for(self, model: str) -> float | None:
        if isinstance(self.goal, dict):
            return self.goal.get(model)
        return self.goal

    def fmt(self, v: float) -> str:
        if math.isnan(v):
            return "n/a"
        return f"{100 * v:+.1f}%" if self.unit == "%" and self.minus_one else (
            f"{100 * v:.0f}%" if self.unit == "%" else f"{v:.2f}x")


@dataclass(frozen=True)
class Comparison:
    id: str
    title: str
    ratios: tuple[Ratio, ...]


COMPARISONS: dict[str, Comparison] = {c.id: c for c in (
    Comparison("1", "fast path (q4_k_m GGUF + ONNX) vs the same checkpoint in PyTorch fp32", (
        Ratio("latency speed-up (PyTorch / BUA)", "time", "torch", "bua", 3.0),
        Ratio("peak RSS ratio (PyTorch / BUA)", "peak_rss_mib", "torch", "bua", 3.0),
    )),
    Comparison("2", "soft-token prompt vs the history as text (TALLRec-style)", (
        Ratio("fewer prompt tokens (text / soft)", "prompt_positions", "text", "soft", 10.0),
        Ratio("lower latency (text / soft)", "time", "text", "soft", 5.0),
    )),
    Comparison("3", "multi-round dialogue: KV-cache reuse vs re-evaluating every round", (
        Ratio("speed-up (re-evaluate / reuse)", "time", "reevaluate", "reuse", 2.0),
    )),
    Comparison("4", "candidate scoring: shared prompt state vs one full evaluation per candidate", (
        Ratio("speed-up (per candidate / shared)", "time", "per_candidate", "shared", 4.0),
    )),
    Comparison("5", "quant types (vs f16): latency, peak RSS, file size, top-1 agreement", (
        Ratio("q8_0 latency / f16", "time", "q8_0", "f16"),
        Ratio("q5_k_m latency / f16", "time", "q5_k_m", "f16"),
        Ratio("q4_k_m latency / f16", "time", "q4_k_m", "f16"),
        Ratio("q4_k_m peak RSS / f16", "peak_rss_mib", "q4_k_m", "f16"),
        Ratio("q4_k_m file size / f16", "file_mib", "q4_k_m", "f16"),
        Ratio("q4_k_m top-1 agreement with f16 (soft prompt)", "agreement_soft", "q4_k_m", None, unit="%"),
        Ratio("q4_k_m top-1 agreement with f16 (text prompt)", "agreement_text", "q4_k_m", None, unit="%"),
    )),
    Comparison("6", "bua._native glue vs llama-cpp-python's low-level API, identical llama_decode calls", (
        Ratio("native overhead (native / raw - 1)", "time", "native", "raw", 0.05, kind="max",
              minus_one=True, unit="%"),
    )),
    Comparison("7", "decode tokens/s vs the memory-bandwidth limit", (
        Ratio("decode speed / bandwidth limit", "fraction_of_limit", "decode", None,
              {"qwen2.5-1.5b-shape": 0.70, "qwen2.5-0.5b-shape": 0.55}, unit="%"),
    )),
    Comparison("8", "streaming: stream.append per event vs a fresh predict of the same window", (
        Ratio("per-event speed-up while the window grows (fresh / stream)", "time", "fresh_growing",
              "stream_growing", 3.0),
        Ratio("amortized speed-up over a log 4x the window (fresh / stream)", "time", "fresh_log",
              "stream_log", 2.0),
        Ratio("per-event speed-up while the window grows, vs scoring every behavior (fresh exact / stream)",
              "time", "fresh_exact_growing", "stream_growing"),
        Ratio("amortized speed-up over the log, vs scoring every behavior (fresh exact / stream)", "time",
              "fresh_exact_log", "stream_log"),
        Ratio("shortlist speed-up of a fresh predict, growing window (fresh exact / fresh)", "time",
              "fresh_exact_growing", "fresh_growing"),
    )),
)}


@dataclass(frozen=True)
class Outcome:
    comparison: str
    model: str
    ratio: Ratio
    value: float
    goal: float | None

    @property
    def met(self) -> bool | None:
        if self.goal is None or math.isnan(self.value):
            return None
        return self.value >= self.goal if self.ratio.kind == "min" else self.value <= self.goal

    def verdict(self) -> str:
        """'met' / 'missed by ...' / '' (no goal)."""
        if self.goal is None:
            return ""
        if math.isnan(self.value):
            return "not measured"
        goal_txt = ("≥ " if self.ratio.kind == "min" else "≤ ") + self.ratio.fmt(self.goal)
        if self.met:
            return f"met (goal {goal_txt})"
        if self.ratio.kind == "min":
            short = 1 - self.value / self.goal
            return f"MISSED (goal {goal_txt}; {100 * short:.0f}% short, a further {self.goal / self.value:.2f}x needed)"
        return f"MISSED (goal {goal_txt}; {self.ratio.fmt(self.value - self.goal).lstrip('+')} over)"


def find(records: Iterable[SideRecord], comparison: str, model: str, side: str) -> SideRecord | None:
    for r in records:
        if r.comparison == comparison and r.model == model and r.side == side:
            return r
    return None


def evaluate(records: list[SideRecord]) -> list[Outcome]:
    """Every ratio of every comparison, per model that has the sides it needs."""
    out: list[Outcome] = []
    for comp in COMPARISONS.values():
        models = sorted({r.model for r in records if r.comparison == comp.id}, key=_model_order)
        for model in models:
            for ratio in comp.ratios:
                num = find(records, comp.id, model, ratio.num)
                den = find(records, comp.id, model, ratio.den) if ratio.den else None
                if num is None or (ratio.den and den is None):
                    continue
                value = num.value(ratio.metric)
                if den is not None:
                    d = den.value(ratio.metric)
                    value = value / d if d else float("nan")
                if ratio.minus_one:
                    value -= 1
                out.append(Outcome(comp.id, model, ratio, value, ratio.goal_for(model)))
    return out


MODEL_ORDER = ("smollm2-135m", "qwen2.5-0.5b-shape", "qwen2.5-1.5b-shape")


def _model_order(model: str) -> int:
    return MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)
