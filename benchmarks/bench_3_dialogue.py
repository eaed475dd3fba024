"""Comparison 3: the explained prediction (key behaviors -> patterns -> summary -> predict)
as one dialogue whose KV cache grows round by round, vs re-evaluating the whole conversation
at every round (a stateless chat call). Answers are the labeler's reference answers, decoded
one token per llama_decode on both sides as generation would; soft rows are computed once
beforehand (the ONNX step is the same on both sides)."""
from __future__ import annotations

import pytest
from benchkit import artifacts
from benchkit.paired import check_against, runner_factory, time_side
from benchkit.workloads import explain_dialogue

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY]


@pytest.fixture(scope="module")
def runners(models, bench):
    return runner_factory(models, bench, lambda s, p: explain_dialogue(s, p.template, p.chat))


@pytest.fixture(scope="module")
def first_scores() -> dict:
    """(model, side) -> the first dialogue's candidate log-probs, for the cross-check."""
    return {}


def _side(benchmark, bench, recorder, models, runners, first_scores, model, side, role, label, method):
    return time_side(benchmark, bench, recorder, models, runners, first_scores, comparison="3", model=model,
                     side=side, role=role, label=label, method=method,
                     extra_metrics=lambda counts, _: dict(
                         decoded_tokens=counts.decoded_tokens,
                         **{f"{k}_ms": 1e3 * v for k, v in counts.seconds.items()}))


@pytest.mark.parametrize("model", MODELS)
def test_dialogue_kv_reuse(benchmark, bench, recorder, models, runners, first_scores, model):
    _side(benchmark, bench, recorder, models, runners, first_scores, model, "reuse", "bua",
          "KV cache kept across rounds", "dialogue_kv_reuse")


@pytest.mark.parametrize("model", MODELS)
def test_dialogue_reevaluate(benchmark, bench, recorder, models, runners, first_scores, model):
    rec, scores = _side(benchmark, bench, recorder, models, runners, first_scores, model, "reevaluate", "baseline",
                        "whole conversation re-evaluated every round", "dialogue_reevaluate")
    check_against(benchmark, rec, scores, runners, first_scores, model=model, ref_side="reuse",
                  ref_method="dialogue_kv_reuse")
