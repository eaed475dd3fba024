"""Comparison 4: scoring every behavior name as the answer, with the prompt evaluated once and
each candidate on a copy of its KV sequence (all candidates in one batch) vs one full
evaluation (prompt + candidate) per candidate. Same prompt (the fast path's), same soft rows."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchkit import artifacts
from benchkit.recorder import finish, run_side
from benchkit.sessions import DialogueRunner, new_session
from benchkit.workloads import prediction_round, samples

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY]


@pytest.fixture(scope="module")
def runners(models, bench):
    cache: dict[str, list[DialogueRunner]] = {}

    def get(model: str) -> list[DialogueRunner]:
        if model not in cache:
            p = models.predictor(model, "q4_k_m")
            session = new_session(p)
            cache[model] = [DialogueRunner(p, session, prediction_round(p.template, p.chat), p.soft_tokens(s.history))
                            for s in samples(max(1, bench.n_histories // 2))]
        return cache[model]

    return get


def _side(benchmark, bench, recorder, models, runners, model, side, role, label, method):
    rs = runners(model)
    cycle = itertools.cycle(rs)
    rec = run_side(benchmark, bench, recorder, comparison="4", model=model, model_label=models.info(model).label,
                   side=side, role=role, label=label, fn=lambda: getattr(next(cycle), method)())
    scores, counts = getattr(rs[0], method)()
    rec.metrics.update(prefill_positions=counts.prefill_positions, llama_calls=counts.llama_calls,
                       candidates=len(rs[0].candidates),
                       candidate_positions=sum(len(c) - 1 for c in rs[0].candidates),
                       **{f"{k}_ms": 1e3 * v for k, v in counts.seconds.items()})
    finish(benchmark, rec)
    return rec, scores


@pytest.mark.parametrize("model", MODELS)
def test_scoring_shared(benchmark, bench, recorder, models, runners, model):
    _side(benchmark, bench, recorder, models, runners, model, "shared", "bua",
          "prompt once, candidates on KV copies in one batch", "scoring_shared")


@pytest.mark.parametrize("model", MODELS)
def test_scoring_per_candidate(benchmark, bench, recorder, models, runners, model):
    rec, scores = _side(benchmark, bench, recorder, models, runners, model, "per_candidate", "baseline",
                        "prompt + candidate evaluated per candidate", "scoring_per_candidate")
    shared, _ = runners(model)[0].scoring_shared()
    rec.metrics["max_abs_logprob_diff_vs_shared"] = float(np.max(np.abs(shared - scores)))
    finish(benchmark, rec)
    assert np.argmax(shared) == np.argmax(scores) or rec.metrics["max_abs_logprob_diff_vs_shared"] < 0.5
