"""Comparison 5: the SmolLM2 bundle at f16, q8_0, q5_k_m and q4_k_m (the same backbone, encoder
and projector exported four times): fast-path latency, peak RSS (fresh process), GGUF file
size, and top-1 agreement with f16 over a fixed set of histories, with the soft-token prompt
(random-init projector: untrained soft tokens) and with the text prompt (the real SmolLM2
weights reading the history as text)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from benchkit import artifacts
from benchkit.kernels import weight_type_metrics
from benchkit.probe import run_probe
from benchkit.recorder import finish, run_side
from benchkit.sessions import TextPromptPredictor
from benchkit.workloads import histories

pytestmark = pytest.mark.bua_compare
MODEL = artifacts.SMOLLM2_KEY
QUANTS = ("f16", "q8_0", "q5_k_m", "q4_k_m")


@pytest.fixture(scope="module")
def top1(models, bench):
    """quant -> (soft-prompt top-1 ids, text-prompt top-1 ids) over the agreement histories."""
    cache: dict[str, tuple[list[int], list[int]]] = {}

    def get(quant: str) -> tuple[list[int], list[int]]:
        if quant not in cache:
            p = models.predictor(MODEL, quant)
            text = TextPromptPredictor(p)
            hs = histories(bench.n_agreement)
            soft = [p.predict(h, top_k=1, explain=False).top[0].behavior_id for h in hs]
            txt = [int(np.argmax(text.logprobs(h))) for h in hs]
            cache[quant] = (soft, txt)
        return cache[quant]

    return get


@pytest.mark.parametrize("quant", QUANTS)
def test_quant(benchmark, bench, recorder, models, top1, quant):
    assert quant in bench.quants
    p = models.predictor(MODEL, quant)
    cycle = itertools.cycle(histories(bench.n_histories))
    rec = run_side(benchmark, bench, recorder, comparison="5", model=MODEL, model_label=models.info(MODEL).label,
                   side=quant, role="point", label=f"fast path, {quant} GGUF",
                   fn=lambda: p.predict(next(cycle), top_k=5, explain=False))
    rec.metrics["file_mib"] = p.bundle.gguf_path.stat().st_size / 2**20
    rec.metrics["gguf"] = p.model.description
    rec.metrics.update(weight_type_metrics(p.bundle.gguf_path))
    rec.metrics["n_embd"] = p.model.n_embd
    probe = run_probe("native", bench.threads, bench.rss_predictions, bundle=models.bundle(MODEL, quant))
    rec.metrics["peak_rss_mib"] = probe["peak_rss_mib"]
    rec.metrics["rss_after_load_mib"] = probe["rss_after_load_mib"]
    soft, txt = top1(quant)
    ref_soft, ref_txt = top1("f16")
    rec.metrics.update(
        agreement_soft=float(np.mean(np.equal(soft, ref_soft))),
        agreement_text=float(np.mean(np.equal(txt, ref_txt))),
        n_agreement=len(soft),
        distinct_top1_soft=len(set(soft)),
        distinct_top1_text=len(set(txt)),
    )
    finish(benchmark, rec)
