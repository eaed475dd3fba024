"""Comparison 2: the history as soft tokens (one row per event from the ONNX encoder +
projector) vs the same history written as event lines in the prompt (TALLRec-style), same
backbone and quant type, same question, same candidate scoring: prompt positions and latency."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchkit import artifacts
from benchkit.recorder import finish, run_side
from benchkit.sessions import TextPromptPredictor, fastpath_breakdown
from benchkit.workloads import histories

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY]


@pytest.mark.parametrize("model", MODELS)
def test_prompt_soft(benchmark, bench, recorder, models, model):
    p = models.predictor(model, "q4_k_m")
    hs = histories(bench.n_histories)
    cycle = itertools.cycle(hs)
    rec = run_side(benchmark, bench, recorder, comparison="2", model=model, model_label=models.info(model).label,
                   side="soft", role="bua", label="soft-token prompt (40 events -> 40 rows)",
                   fn=lambda: p.predict(next(cycle), top_k=5, explain=False))
    results = [p.predict(h, top_k=1, explain=False) for h in hs]
    rec.metrics.update(fastpath_breakdown(p, hs[0], 1 if bench.smoke else 5))
    rec.metrics.update(prompt_positions=float(np.mean([r.prompt_tokens for r in results])),
                       history_positions=float(np.mean([r.soft_tokens for r in results])))
    finish(benchmark, rec)


@pytest.mark.parametrize("model", MODELS)
def test_prompt_text(benchmark, bench, recorder, models, model):
    p = models.predictor(model, "q4_k_m")
    text = TextPromptPredictor(p)
    hs = histories(bench.n_histories)
    cycle = itertools.cycle(hs)
    rec = run_side(benchmark, bench, recorder, comparison="2", model=model, model_label=models.info(model).label,
                   side="text", role="baseline", label="history as text lines (TALLRec-style)",
                   fn=lambda: text.top(next(cycle), 5))
    positions, history_tokens = [], []
    for h in hs:
        head, rest = text.prompt_tokens(h)
        positions.append(len(head) + len(rest))
        tail = text_tail_tokens(p)
        history_tokens.append(len(rest) - tail)
    rec.metrics.update(text.breakdown(hs[0], 1 if bench.smoke else 5))
    rec.metrics.update(prompt_positions=float(np.mean(positions)), history_positions=float(np.mean(history_tokens)),
                       head_positions_cached=len(text.prompt_tokens(hs[0])[0]))
    finish(benchmark, rec)


def text_tail_tokens(p) -> int:
    """Tokens of the prompt after the history (question + chat markup), tokenized alone."""
    from bua.dialogue import PREDICT, round_prompt_segments

    tail = round_prompt_segments(p.template, p.chat, PREDICT, True)[2].text
    return len(p.model.tokenize(tail, add_special=False, parse_special=True))
