"""Comparison 2: the history as soft tokens (one row per event from the ONNX encoder +
projector) vs the same history written as event lines in the prompt (TALLRec-style), same
backbone and quant type, same question, same candidate scoring: prompt positions and latency."""
from __future__ import annotations

import numpy as np
import pytest
from benchkit import artifacts
from benchkit.recorder import Cycler, finish, run_side
from benchkit.sessions import TextPromptPredictor, fastpath_breakdown
from benchkit.workloads import histories

from bua.dialogue import PREDICT, round_prompt_segments

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY]


@pytest.mark.parametrize("model", MODELS)
def test_prompt_soft(benchmark, bench, recorder, models, model):
    p = models.predictor(model, "q4_k_m")
    calls = Cycler(histories(bench.n_histories), lambda h: p.predict(h, top_k=5, explain=False))
    rec = run_side(benchmark, bench, recorder, comparison="2", model=model, model_label=models.info(model).label,
                   side="soft", role="bua", label="soft-token prompt (40 events -> 40 rows)", fn=calls)
    results = list(calls.results.values())
    rec.metrics.update(fastpath_breakdown(p, calls.items[0], 1 if bench.smoke else 3))
    rec.metrics.update(prompt_positions=float(np.mean([r.prompt_tokens for r in results])),
                       history_positions=float(np.mean([r.soft_tokens for r in results])))
    finish(benchmark, rec)


@pytest.mark.parametrize("model", MODELS)
def test_prompt_text(benchmark, bench, recorder, models, model):
    p = models.predictor(model, "q4_k_m")
    text = TextPromptPredictor(p)
    hs = histories(bench.n_histories)
    rec = run_side(benchmark, bench, recorder, comparison="2", model=model, model_label=models.info(model).label,
                   side="text", role="baseline", label="history as text lines (TALLRec-style)",
                   fn=Cycler(hs, lambda h: text.top(h, 5)))
    tail = round_prompt_segments(p.template, p.chat, PREDICT, True)[2].text
    n_tail = len(p.model.tokenize(tail, add_special=False, parse_special=True))
    heads, rests = zip(*(text.prompt_tokens(h) for h in hs))
    rec.metrics.update(text.breakdown(hs[0], 1 if bench.smoke else 3))
    rec.metrics.update(prompt_positions=float(np.mean([len(a) + len(b) for a, b in zip(heads, rests)])),
                       history_positions=float(np.mean([len(b) - n_tail for b in rests])),
                       head_positions_cached=len(heads[0]))
    finish(benchmark, rec)
