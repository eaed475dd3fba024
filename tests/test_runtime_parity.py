"""On-device BUA agrees with the PyTorch model of the same checkpoint (issue 6's parity):
identical top-1 on an f16 bundle, >= 95% top-1 agreement for q4_k_m."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from bua.training.pipeline import RunOptions, run_curriculum

    out = tmp_path_factory.mktemp("parity") / "run"
    run_curriculum(RunOptions(config=ROOT / "training" / "configs" / "tiny-cpu.yaml", out=out, device="cpu",
                              evaluate=False, progress=False))
    return out


@pytest.fixture(scope="module")
def torch_scores(trained_run):
    from bua.training.runtime_parity import torch_logprobs

    samples, lp, _ = torch_logprobs(trained_run, n_samples=None)
    return samples, lp


@pytest.mark.parametrize("quant,min_agreement", [("f16", 1.0), ("q4_k_m", 0.95)])
def test_runtime_top1_matches_pytorch(trained_run, torch_scores, tmp_path, quant, min_agreement):
    from bua.export.pipeline import export_run
    from bua.training.runtime_parity import compare

    bundle = tmp_path / f"bundle-{quant}"
    export_run(trained_run, bundle, quant, n_threads=1, progress=lambda msg: None)
    samples, lp = torch_scores
    report = compare(samples, lp, bundle, n_threads=1)
    print(report)
    assert report.samples >= 20
    assert report.top1_agreement >= min_agreement, report
    assert report.disagreements == round((1 - report.top1_agreement) * report.samples)
    assert (report.max_torch_margin_at_disagreement > 0) == (report.disagreements > 0)
    if quant == "f16":
        assert report.max_abs_logprob_diff < 0.05, report


def test_imatrix_export_is_calibrated_on_the_runs_dialogues(trained_run, torch_scores, tmp_path):
    import json

    from bua.export.pipeline import export_run
    from bua.training.runtime_parity import compare

    bundle = tmp_path / "bundle-imatrix"
    export_run(trained_run, bundle, "q4_k_m", n_threads=1, imatrix_dialogues=8, progress=lambda msg: None)
    imatrix = json.loads((bundle / "manifest.json").read_text())["quantization"]["imatrix"]
    assert imatrix["dialogues"] == 8 and imatrix["tokens"] > 8 and imatrix["tensors"] > 0
    samples, lp = torch_scores
    report = compare(samples, lp, bundle, n_threads=1)
    assert report.top1_agreement >= 0.95, report
