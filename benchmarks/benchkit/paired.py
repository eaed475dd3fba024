"""Comparisons 3 and 4: one DialogueRunner workload timed two ways on the same q4_k_m session,
with the baseline side's candidate scores checked against the BUA side's."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .recorder import Cycler, SideRecord, finish, run_side
from .sessions import Counts, DialogueRunner, new_session
from .workloads import samples

# nats: beyond numerical noise, the two sides would not compute the same thing. Different batch
# splits change llama.cpp's numerics (measured: ~0.08 nats with f16/f32 weights and the f16 KV
# cache, up to ~0.8 with q4_k_m on untrained soft tokens; transformers fp32 sits between the two
# paths), so only gross disagreement is an error.
MAX_DIFF = 3.0

RoundsFor = Callable[[Any, Any], list]          # (sample, predictor) -> dialogue rounds
ExtraMetrics = Callable[[Counts, DialogueRunner], dict[str, Any]]


def runner_factory(models, bench, rounds_for: RoundsFor) -> Callable[[str], list[DialogueRunner]]:
    """model key -> its DialogueRunners (built once per model, on one shared session)."""
    cache: dict[str, list[DialogueRunner]] = {}

    def get(model: str) -> list[DialogueRunner]:
        if model not in cache:
            p = models.predictor(model, "q4_k_m")
            session = new_session(p)
            cache[model] = [DialogueRunner(p, session, rounds_for(s, p), p.soft_tokens(s.history))
                            for s in samples(max(1, bench.n_histories // 4))]
        return cache[model]

    return get


def time_side(benchmark, bench, recorder, models, runners, first_scores: dict, *, comparison: str,
              model: str, side: str, role: str, label: str, method: str,
              extra_metrics: ExtraMetrics) -> tuple[SideRecord, np.ndarray]:
    """Times DialogueRunner.<method> over the model's runners; keeps the first runner's scores
    in first_scores[(model, side)] for the other side's check."""
    calls = Cycler(runners(model), lambda r: getattr(r, method)())
    rec = run_side(benchmark, bench, recorder, comparison=comparison, model=model,
                   model_label=models.info(model).label, side=side, role=role, label=label, fn=calls)
    scores, counts = calls.result(0)
    first_scores[(model, side)] = scores
    rec.metrics.update(prefill_positions=counts.prefill_positions, llama_calls=counts.llama_calls,
                       **extra_metrics(counts, calls.items[0]))
    finish(benchmark, rec)
    return rec, scores


def check_against(benchmark, rec: SideRecord, scores: np.ndarray, runners, first_scores: dict, *,
                  model: str, ref_side: str, ref_method: str) -> None:
    """Records how far `scores` are from the reference side's and fails on gross disagreement."""
    ref = first_scores.get((model, ref_side))
    if ref is None:  # this side run alone (-k): compute the reference
        ref, _ = getattr(runners(model)[0], ref_method)()
    rec.metrics[f"max_abs_logprob_diff_vs_{ref_side}"] = float(np.max(np.abs(ref - scores)))
    rec.metrics[f"same_top1_as_{ref_side}"] = bool(np.argmax(ref) == np.argmax(scores))
    finish(benchmark, rec)
    assert np.all(np.isfinite(scores)) and rec.metrics[f"max_abs_logprob_diff_vs_{ref_side}"] < MAX_DIFF
