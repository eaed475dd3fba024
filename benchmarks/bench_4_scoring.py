"""Comparison 4: scoring every behavior name as the answer, with the prompt evaluated once and
each candidate on a copy of its KV sequence (all candidates in one batch) vs one full
evaluation (prompt + candidate) per candidate. Same prompt (the fast path's), same soft rows."""
from __future__ import annotations

import pytest
from benchkit import artifacts
from benchkit.paired import check_against, runner_factory, time_side
from benchkit.workloads import prediction_round

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY]


@pytest.fixture(scope="module")
def runners(models, bench):
    return runner_factory(models, bench, lambda s, p: prediction_round(p.template, p.chat))


@pytest.fixture(scope="module")
def first_scores() -> dict:
    """(model, side) -> the first prompt's candidate log-probs, for the cross-check."""
    return {}


def _candidate_metrics(counts, runner) -> dict:
    return dict(candidates=len(runner.candidates), candidate_positions=sum(len(c) - 1 for c in runner.candidates),
                **{f"{k}_ms": 1e3 * v for k, v in counts.seconds.items() if k != "decode"})


def _side(benchmark, bench, recorder, models, runners, first_scores, model, side, role, label, method):
    return time_side(benchmark, bench, recorder, models, runners, first_scores, comparison="4", model=model,
                     side=side, role=role, label=label, method=method, extra_metrics=_candidate_metrics)


@pytest.mark.parametrize("model", MODELS)
def test_scoring_shared(benchmark, bench, recorder, models, runners, first_scores, model):
    _side(benchmark, bench, recorder, models, runners, first_scores, model, "shared", "bua",
          "prompt once, candidates on KV copies in one batch", "scoring_shared")


@pytest.mark.parametrize("model", MODELS)
def test_scoring_per_candidate(benchmark, bench, recorder, models, runners, first_scores, model):
    rec, scores = _side(benchmark, bench, recorder, models, runners, first_scores, model, "per_candidate",
                        "baseline", "prompt + candidate evaluated per candidate", "scoring_per_candidate")
    check_against(benchmark, rec, scores, runners, first_scores, model=model, ref_side="shared",
                  ref_method="scoring_shared")
