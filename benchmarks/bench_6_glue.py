"""Comparison 6: bua._native (pybind11 + the C++ session) vs llama-cpp-python's low-level
ctypes API on the identical workload, the fast path's shape: the prompt head as tokens, 40
soft rows as embeddings, the prompt tail as tokens, then single-token decodes. Both sides
issue the same llama_decode calls on the same GGUF with the same context parameters; their
final logits must be identical. Every timed round of one side follows an untimed round of the
other (rounds alternate), so both see the same machine state."""
from __future__ import annotations

import numpy as np
import pytest
from benchkit import artifacts
from benchkit.rawllama import RawSession
from benchkit.recorder import finish, run_side
from benchkit.sessions import new_session
from benchkit.workloads import histories

from bua.dialogue import PREDICT, round_prompt_segments

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY]
N_CTX = 4096  # OnDevicePredictor's context


@pytest.fixture(scope="module")
def glue(models, bench):
    """model -> the workload and both sessions (native, raw) on the bundle's q4_k_m GGUF."""
    cache: dict[str, dict] = {}

    def get(model: str) -> dict:
        if model not in cache:
            p = models.predictor(model, "q4_k_m")
            head, _, tail = round_prompt_segments(p.template, p.chat, PREDICT, True)
            decode = [c[0] for c in p.engine.candidates][: max(4, bench.decode_tokens // 2)]
            cache[model] = {"head": p.engine.tokens(head.text), "rows": p.soft_tokens(histories(1)[0]),
                            "tail": p.engine.tokens(tail.text), "decode": decode, "label": models.info(model).label,
                            "native": new_session(p, N_CTX),
                            "raw": RawSession(p.bundle.gguf_path, N_CTX, bench.threads)}
        return cache[model]

    yield get
    for entry in cache.values():
        entry["raw"].close()


def run(session, w: dict) -> None:
    session.reset()
    session.eval_tokens(w["head"])
    session.eval_embeddings(w["rows"])
    session.eval_tokens(w["tail"])
    for t in w["decode"]:
        session.eval_tokens([t])


def _calls(w: dict, n_batch: int = 512) -> int:
    chunks = sum(-(-len(x) // n_batch) for x in (w["head"], w["rows"], w["tail"]))
    return chunks + len(w["decode"])


def _side(benchmark, bench, recorder, model: str, w: dict, side: str, other: str, role: str, label: str):
    rec = run_side(benchmark, bench, recorder, comparison="6", model=model, model_label=w["label"],
                   side=side, role=role, label=label, fn=lambda: run(w[side], w), setup=lambda: run(w[other], w))
    rec.metrics.update(llama_decode_calls=_calls(w),
                       positions=len(w["head"]) + len(w["rows"]) + len(w["tail"]) + len(w["decode"]))
    return rec


@pytest.mark.parametrize("model", MODELS)
def test_glue_native(benchmark, bench, recorder, glue, model):
    rec = _side(benchmark, bench, recorder, model, glue(model), "native", "raw", "bua",
                "bua._native Session (pybind11, C++)")
    finish(benchmark, rec)


@pytest.mark.parametrize("model", MODELS)
def test_glue_raw(benchmark, bench, recorder, glue, model):
    w = glue(model)
    rec = _side(benchmark, bench, recorder, model, w, "raw", "native", "baseline",
                "llama-cpp-python low-level API (ctypes)")
    run(w["native"], w)
    run(w["raw"], w)
    diff = float(np.max(np.abs(np.asarray(w["native"].last_logits()) - w["raw"].logits)))
    rec.metrics["max_abs_logit_diff_vs_native"] = diff
    finish(benchmark, rec)
    assert diff < 1e-3, f"native and raw paths disagree (max |logit diff| {diff}): not the same workload"
