"""Comparison 3: the explained prediction (key behaviors -> patterns -> summary -> predict)
as one dialogue whose KV cache grows round by round, vs re-evaluating the whole conversation
at every round (a stateless chat call). Answers are the labeler's reference answers, decoded
one token per llama_decode on both sides as generation would; soft rows are computed once
beforehand (the ONNX step is the same on both sides)."""
from __future__ import annotations

import numpy as np
import pytest

from benchkit import artifacts
from benchkit.recorder import Cycler, finish, run_side
from benchkit.sessions import DialogueRunner, new_session
from benchkit.workloads import explain_dialogue, samples

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY]
MAX_DIFF = 3.0  # nats: beyond numerical noise, the two sides would not compute the same thing


@pytest.fixture(scope="module")
def runners(models, bench):
    cache: dict[str, list[DialogueRunner]] = {}

    def get(model: str) -> list[DialogueRunner]:
        if model not in cache:
            p = models.predictor(model, "q4_k_m")
            session = new_session(p)
            cache[model] = [DialogueRunner(p, session, explain_dialogue(s, p.template, p.chat), p.soft_tokens(s.history))
                            for s in samples(max(1, bench.n_histories // 4))]
        return cache[model]

    return get


@pytest.fixture(scope="module")
def first_scores() -> dict:
    """(model, side) -> the first dialogue's candidate log-probs, for the cross-check."""
    return {}


def _side(benchmark, bench, recorder, models, runners, first_scores, model, side, role, label, method):
    calls = Cycler(runners(model), lambda r: getattr(r, method)())
    rec = run_side(benchmark, bench, recorder, comparison="3", model=model, model_label=models.info(model).label,
                   side=side, role=role, label=label, fn=calls)
    scores, counts = calls.result(0)
    first_scores[(model, side)] = scores
    rec.metrics.update(prefill_positions=counts.prefill_positions, decoded_tokens=counts.decoded_tokens,
                       llama_calls=counts.llama_calls,
                       **{f"{k}_ms": 1e3 * v for k, v in counts.seconds.items()})
    finish(benchmark, rec)
    return rec, scores


@pytest.mark.parametrize("model", MODELS)
def test_dialogue_kv_reuse(benchmark, bench, recorder, models, runners, first_scores, model):
    _side(benchmark, bench, recorder, models, runners, first_scores, model, "reuse", "bua",
          "KV cache kept across rounds", "dialogue_kv_reuse")


@pytest.mark.parametrize("model", MODELS)
def test_dialogue_reevaluate(benchmark, bench, recorder, models, runners, first_scores, model):
    rec, scores = _side(benchmark, bench, recorder, models, runners, first_scores, model, "reevaluate", "baseline",
                        "whole conversation re-evaluated every round", "dialogue_reevaluate")
    reuse = first_scores.get((model, "reuse"))
    if reuse is None:  # run alone (-k): compute the reference
        reuse, _ = runners(model)[0].dialogue_kv_reuse()
    rec.metrics["max_abs_logprob_diff_vs_reuse"] = float(np.max(np.abs(reuse - scores)))
    rec.metrics["same_top1_as_reuse"] = bool(np.argmax(reuse) == np.argmax(scores))
    finish(benchmark, rec)
    # Different batch splits change llama.cpp's numerics slightly (see bench_4_scoring.py), so
    # only gross disagreement is an error.
    assert np.all(np.isfinite(scores)) and rec.metrics["max_abs_logprob_diff_vs_reuse"] < MAX_DIFF
