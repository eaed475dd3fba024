"""Comparison 1: OnDevicePredictor's fast path (q4_k_m GGUF + ONNX encoder) vs the same
checkpoint in PyTorch/transformers fp32 on the CPU: latency per prediction (same prompt,
candidate scoring over every behavior) and peak RSS, each side measured in a fresh process."""
from __future__ import annotations

import pytest
from benchkit import artifacts
from benchkit.kernels import describe, profile_probe, weight_type_metrics
from benchkit.probe import run_probe
from benchkit.recorder import Cycler, finish, run_side
from benchkit.sessions import fastpath_breakdown
from benchkit.workloads import histories

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY]


def _rss(metrics: dict, probe: dict) -> None:
    metrics.update(peak_rss_mib=probe["peak_rss_mib"], rss_before_load_mib=probe["rss_after_imports_mib"],
                   rss_after_load_mib=probe["rss_after_load_mib"], torch_imported=probe["torch_imported"])


@pytest.mark.parametrize("model", MODELS)
def test_fastpath_bua(benchmark, bench, recorder, models, model):
    p = models.predictor(model, "q4_k_m")
    calls = Cycler(histories(bench.n_histories), lambda h: p.predict(h, top_k=5, explain=False).behavior)
    rec = run_side(benchmark, bench, recorder, comparison="1", model=model, model_label=models.info(model).label,
                   side="bua", role="bua", label="OnDevicePredictor.predict(explain=False), q4_k_m + ONNX", fn=calls)
    rec.metrics.update(fastpath_breakdown(p, calls.items[0], 1 if bench.smoke else 5))
    rec.metrics["top1"] = {str(i): b for i, b in sorted(calls.results.items())}
    probe = run_probe("native", bench.threads, bench.rss_predictions, bundle=models.bundle(model))
    assert not probe["torch_imported"], "the on-device side imported torch"
    _rss(rec.metrics, probe)
    rows, why = profile_probe(["native", "--bundle", str(models.bundle(model)), "--threads", str(bench.threads),
                               "--predictions", str(bench.n_histories)])
    rec.metrics["kernels"] = describe(rows) if rows else f"no profile: {why}"
    rec.metrics["kernel_shares"] = {name: pct for name, pct in rows}
    rec.metrics.update(weight_type_metrics(p.bundle.gguf_path))
    rec.metrics["n_embd"] = p.model.n_embd
    finish(benchmark, rec)


@pytest.mark.parametrize("model", MODELS)
def test_fastpath_torch(benchmark, bench, recorder, models, model):
    from benchkit.torchside import TorchPredictor

    info = models.info(model)
    enc, proj = artifacts.encoder_dir(bench), artifacts.projector_dir(bench, artifacts.hf_width(info.backbone_dir))
    tp = TorchPredictor(info.backbone_dir, enc, proj, artifacts.dataset().vocab, bench.threads)
    calls = Cycler(histories(bench.n_histories), lambda h, tp=tp: tp.top(h, 5)[0])
    rec = run_side(benchmark, bench, recorder, comparison="1", model=model, model_label=info.label,
                   side="torch", role="baseline", label="BUAModel.score_candidates, transformers fp32", fn=calls)
    rec.metrics.update(tp.breakdown(calls.items[0], 1))
    rec.metrics["top1"] = {str(i): b for i, b in sorted(calls.results.items())}
    del tp, calls
    probe = run_probe("torch", bench.threads, bench.rss_predictions, backbone=info.backbone_dir,
                      encoder=enc, projector=proj)
    _rss(rec.metrics, probe)
    finish(benchmark, rec)
