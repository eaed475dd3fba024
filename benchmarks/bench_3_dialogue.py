"""Comparison 3: the explained prediction (key behaviors -> patterns -> summary -> predict)
as one dialogue whose KV cache grows round by round, vs re-evaluating the whole conversation
at every round (a stateless chat call). Answers are the labeler's reference answers, decoded
one token per llama_decode on both sides as generation would; soft rows are computed once
beforehand (the ONNX step is the same on both sides)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchkit import artifacts
from benchkit.recorder import finish, run_side
from benchkit.sessions import DialogueRunner, new_session
from benchkit.workloads import explain_dialogue, samples

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY]


@pytest.fixture(scope="module")
def runners(models, bench):
    cache: dict[str, list[DialogueRunner]] = {}

    def get(model: str) -> list[DialogueRunner]:
        if model not in cache:
            p = models.predictor(model, "q4_k_m")
            session = new_session(p)
            cache[model] = [DialogueRunner(p, session, explain_dialogue(s, p.template, p.chat), p.soft_tokens(s.history))
                            for s in samples(max(1, bench.n_histories // 2))]
        return cache[model]

    return get


def _side(benchmark, bench, recorder, models, runners, model, side, role, label, method):
    rs = runners(model)
    cycle = itertools.cycle(rs)
    rec = run_side(benchmark, bench, recorder, comparison="3", model=model, model_label=models.info(model).label,
                   side=side, role=role, label=label, fn=lambda: getattr(next(cycle), method)())
    scores, counts = getattr(rs[0], method)()
    rec.metrics.update(prefill_positions=counts.prefill_positions, decoded_tokens=counts.decoded_tokens,
                       llama_calls=counts.llama_calls,
                       **{f"{k}_ms": 1e3 * v for k, v in counts.seconds.items()})
    finish(benchmark, rec)
    return rec, scores


@pytest.mark.parametrize("model", MODELS)
def test_dialogue_kv_reuse(benchmark, bench, recorder, models, runners, model):
    _side(benchmark, bench, recorder, models, runners, model, "reuse", "bua",
          "KV cache kept across rounds", "dialogue_kv_reuse")


@pytest.mark.parametrize("model", MODELS)
def test_dialogue_reevaluate(benchmark, bench, recorder, models, runners, model):
    rec, scores = _side(benchmark, bench, recorder, models, runners, model, "reevaluate", "baseline",
                        "whole conversation re-evaluated every round", "dialogue_reevaluate")
    reuse, _ = runners(model)[0].dialogue_kv_reuse()
    rec.metrics["max_abs_logprob_diff_vs_reuse"] = float(np.max(np.abs(reuse - scores)))
    finish(benchmark, rec)
    assert np.argmax(reuse) == np.argmax(scores) or rec.metrics["max_abs_logprob_diff_vs_reuse"] < 0.5
