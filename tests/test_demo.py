"""`bua demo --quick`: the whole chain (simulate, encoder, curriculum, export, on-device
prediction, explanation, metrics, generation) on a tiny random backbone, then a rerun that
reuses every finished step."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _demo(out: Path, *extra: str) -> str:
    cmd = [sys.executable, "-m", "bua.app.cli", "demo", "--quick", "--threads", "1", "--out", str(out), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_quick_demo_runs_the_whole_chain_and_reuses_finished_steps(tmp_path):
    first = _demo(tmp_path)
    for needle in ("curriculum trained", "bundle exported", "top-5 next behaviors", "[key_behaviors]",
                   "[patterns]", "[summary]", "true next event:", "| BUA (on-device) |", "| markov |",
                   "| soft-token probe (read-out ceiling) |", "| behavior encoder alone (its own head) |",
                   "| SASRec |", "understanding rounds of 1 test user:", "behavior counts claimed",
                   "generated next day", "Table 2 metrics",
                   "unconstrained first attempts:", "total"):
        assert needle in first, needle
    runs = list(tmp_path.glob("tiny-cpu-*"))
    assert len(runs) == 1 and (runs[0] / "bundle-q8_0" / "manifest.json").is_file()  # the default quant

    second = _demo(tmp_path)
    assert "curriculum reused" in second and "bundle reused" in second and "; reused)" in second


def _planner(tmp_path: Path, **defaults):
    """make_plan over `bua demo`'s arguments, the given ones overriding the defaults."""
    import argparse

    from bua.app.demo import make_plan

    def plan(**kw):
        args = dict(quick=False, config=None, data=None, quant="q4_k_m", out=str(tmp_path), threads=1,
                    generation_samples=2, explanation_users=2, users=None, column=[])
        args.update(defaults, **kw)
        return make_plan(argparse.Namespace(**args))

    return plan


def test_plan_hash_covers_config_data_and_quant(tmp_path):
    plan = _planner(tmp_path, quick=True)
    base = plan()
    assert plan().root == base.root
    assert plan(quant="q8_0").root != base.root
    csv = tmp_path / "log.csv"
    csv.write_text("user,timestamp,location,behavior\n")
    other = plan(data=str(csv))
    assert other.root != base.root and other.overrides == {"data.source": "table", "data.path": str(csv.resolve())}


def test_plan_users_override(tmp_path):
    plan = _planner(tmp_path)
    assert plan().overrides == {}
    assert plan(users=50).overrides == {"data.n_users": 50} and plan(users=50).root != plan().root
    with pytest.raises(ValueError, match="at least 10 users"):
        plan(users=3)
    with pytest.raises(ValueError, match="does not apply to --data foursquare"):
        plan(data="foursquare", users=50)


def test_plan_table_columns(tmp_path):
    plan = _planner(tmp_path)
    csv = tmp_path / "log.csv"
    csv.write_text("uid,time,place,act\n")
    with_columns = plan(data=str(csv), column=["user=uid", "timestamp=time", "location=place", "behavior=act"])
    assert with_columns.overrides["data.columns"] == ["user=uid", "timestamp=time", "location=place", "behavior=act"]
    assert with_columns.root != plan(data=str(csv)).root
    with pytest.raises(ValueError, match="unknown table field 'usr'"):
        plan(data=str(csv), column=["usr=uid"])
    with pytest.raises(ValueError, match="--column names the columns of a CSV/Parquet log"):
        plan(column=["user=uid"])


def test_free_lines_line_states_the_share_its_error_over_days_and_the_sampling():
    from bua.app.demo import free_lines_line

    result = {"generation_free_lines": 15, "generation_free_lines_parsed": 7,
              "generation_free_lines_by_day": [[2, 4], [5, 5], [0, 6]],
              "generation_decoding": {"temperature": 1.0, "top_p": 0.95, "min_p": 0.05, "seed": 0}}
    line = free_lines_line(result)
    assert line.startswith("unconstrained first attempts: 7 of 15 lines parse (46.7% ± 31.6% over days;")
    assert line.endswith("temperature 1.0, top-p 0.95, min-p 0.05)")
    empty = dict(result, generation_free_lines=0, generation_free_lines_parsed=0, generation_free_lines_by_day=[])
    assert free_lines_line(empty) == "unconstrained first attempts: 0 of 0 lines parse"


def test_encoder_row_is_the_saved_encoders_own_head_at_each_historys_last_event(tmp_path):
    from types import SimpleNamespace

    import numpy as np
    import torch

    from bua.app.demo import encoder_scores
    from bua.events import events_to_array
    from bua.models.encoder import BehaviorEncoder, EncoderConfig
    from bua.samples import prediction_samples
    from bua.simulate import simulate

    dataset = simulate(n_users=3, n_days=2, seed=0)
    vocab = dataset.vocab
    torch.manual_seed(0)
    encoder = BehaviorEncoder(EncoderConfig.tiny(vocab.n_behaviors, vocab.n_locations)).eval()
    encoder.save(tmp_path)
    samples = prediction_samples(dataset, 8, max_per_user=3) + prediction_samples(dataset, 5, max_per_user=1)
    scores = encoder_scores(tmp_path, SimpleNamespace(vocab=vocab, test_sets={"natural": samples}))["natural"]

    assert scores.shape == (len(samples), vocab.n_behaviors)
    with torch.no_grad():
        for sample, row in zip(samples, scores):
            events = torch.from_numpy(events_to_array(sample.history))[None]
            logits = encoder(events, torch.ones(events.shape[:2], dtype=torch.bool))["behavior"][0, -1]
            np.testing.assert_allclose(row, torch.softmax(logits, -1).numpy(), rtol=1e-4, atol=1e-6)
