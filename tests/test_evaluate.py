"""The prediction report and `bua eval` (a seconds-scale run on a small simulated dataset)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bua.app.cli import build_parser, main
from bua.metrics import prediction_metrics
from bua.models.baseline_eval import BaselineEvalConfig, prediction_report, prepare_eval_data

torch.set_num_threads(1)


def test_prediction_report_tables_and_json(tmp_path):
    y_nat = np.array([0, 0, 1, 2])
    y_lt = np.array([0, 1, 2])
    scores = np.eye(3)[[0, 1, 1, 2]]  # one mistake
    rows = {"good": {"natural": scores, "long_tail": np.array([0, 1, 2])},
            "prior": {"natural": np.zeros((4, 3)) + [0.5, 0.3, 0.2]}}
    rep = prediction_report(rows, {"natural": y_nat, "long_tail": y_lt}, 3,
                            ["head", "medium", "tail"], title="T", meta={"k": 1})
    assert rep.metrics["natural"]["good"] == prediction_metrics(y_nat, scores, 3, ["head", "medium", "tail"])
    assert rep.metrics["long_tail"]["good"]["overall"] == 1.0
    assert "prior" not in rep.metrics["long_tail"]  # a model may skip a test set
    assert rep.frequency_classes == {"head": 1, "medium": 1, "tail": 1}
    md = rep.to_markdown()
    assert "| Method | Rec_w | Prec_w | Overall | Head | Medium | Tail |" in md
    assert "| good | 0.750 |" in md and "### long_tail test set (3 samples)" in md
    # good misses sample 1 only; prior always says 0, hitting samples 0 and 1
    d = np.array([0, -1, 1, 1])
    assert rep.paired["natural"]["prior"] == pytest.approx([0.25, d.std(ddof=1) / 2])
    assert "long_tail" not in rep.paired  # one model only
    # Tail: class 2 holds one sample, too few for a standard error, so no Tail sentence
    assert all(math.isnan(v) for v in rep.paired_tail["natural"]["prior"]) and rep.tail_support["natural"] == [1, 1]
    assert "Tail (" not in rep.to_markdown()
    two = prediction_report({"good": np.eye(3)[[0, 2, 2]], "prior": np.eye(3)[[0, 0, 2]]}, np.array([0, 2, 2]), 3,
                            ["head", "medium", "tail"])
    tail_d = np.array([1, 0])  # good hits both tail samples, prior the second
    assert two.paired_tail["test"]["prior"] == pytest.approx([0.5, tail_d.std(ddof=1) / math.sqrt(2)])
    assert ("Tail (1 tail behaviors, 2 samples): good minus each other method on the same samples (paired SE): "
            f"prior +0.500 ± {tail_d.std(ddof=1) / math.sqrt(2):.3f}.") in two.to_markdown()
    se = rep.metrics["natural"]["good"]["rec_w_se"]
    assert f"Rec_w standard error: ±{se:.3f} (good). good minus each other method on the same " \
           f"samples (paired SE): prior +0.250 ± {d.std(ddof=1) / 2:.3f}." in md
    rep.save(tmp_path)
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["metrics"]["natural"]["prior"]["rec_w"] == pytest.approx(0.5)
    assert (tmp_path / "report.md").read_text() == md


def test_prediction_report_nan_and_errors():
    rep = prediction_report({"m": np.array([0, 1])}, np.array([0, 1]), 2)  # no frequency classes
    assert math.isnan(rep.metrics["test"]["m"]["head"])
    assert json.loads(rep.to_json())["metrics"]["test"]["m"]["head"] is None
    assert "| m | 1.000 | 1.000 | 1.000 | - | - | - |" in rep.to_markdown()
    with pytest.raises(ValueError, match="unknown test set 'other'"):
        prediction_report({"m": {"other": np.array([0])}}, {"test": np.array([0])}, 2)
    with pytest.raises(ValueError, match="3 scores for the 2 samples"):
        prediction_report({"m": np.array([0, 1, 1])}, np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="one score array but there are 2 test sets"):
        prediction_report({"m": np.array([0])}, {"a": np.array([0]), "b": np.array([0])}, 2)


def test_eval_data_protocol():
    cfg = BaselineEvalConfig.quick(sim_users=20, long_tail_per_class=3)
    data = prepare_eval_data(cfg)
    train_users = {u.user_id for u in data.split.train}
    test_users = {u.user_id for u in data.split.test}
    assert not train_users & test_users
    for samples in data.test_sets.values():
        assert {s.user_id for s in samples} <= test_users
    assert {s.user_id for s in data.train} <= train_users
    assert all(len(s.history) == cfg.history_len for s in data.train)
    lt = data.targets()["long_tail"]
    assert np.bincount(lt).max() <= 3 and len(set(lt)) > 5
    assert len(data.freq_classes) == data.vocab.n_behaviors
    assert data.freq_classes == data.vocab.frequency_classes(data.split.train)


def test_bua_eval_cli_quick(tmp_path, capsys):
    code = main(["eval", "--data", "simulator", "--quick", "--no-progress", "--threads", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "### natural test set" in out and "### long_tail test set" in out
    rep = json.loads((tmp_path / "report.json").read_text())
    for test_set in ("natural", "long_tail"):
        assert set(rep["metrics"][test_set]) == {"most-frequent", "markov", "SASRec", "behaveGPT"}
        for m in rep["metrics"][test_set].values():
            assert set(m) == {"rec_w", "rec_w_se", "prec_w", "overall", "head", "medium", "tail"}
            assert 0.0 <= m["rec_w"] <= 1.0
    assert rep["meta"]["models"]["SASRec"]["training"]["epochs"] == 1
    assert rep["meta"]["models"]["encoder_pretraining"]["config"]["d_model"] == 32
    # the pretrained encoder is kept, and a later run can fine-tune it instead of pretraining
    assert (tmp_path / "encoder" / "encoder.safetensors").is_file()
    again = tmp_path / "again"
    assert main(["eval", "--quick", "--no-progress", "--models", "behaveGPT", "--encoder",
                 str(tmp_path / "encoder"), "--out", str(again)]) == 0
    rep2 = json.loads((again / "report.json").read_text())
    assert list(rep2["metrics"]["natural"]) == ["behaveGPT"]
    assert rep2["meta"]["models"]["encoder_pretraining"]["loaded_from"] == str(tmp_path / "encoder")
    assert not (again / "encoder").exists()


def test_cli_dispatch_and_errors(capsys):
    assert main([]) == 2
    assert "eval" in build_parser().format_help()
    assert main(["eval", "--data", "/nonexistent.csv", "--quick", "--no-progress"]) == 1
    assert "not 'simulator', 'foursquare' or an existing" in capsys.readouterr().err


def test_cli_table_columns(tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path / "x.csv"), "--column", "user", "--quick"]) == 1
    assert "--column expects FIELD=NAME" in capsys.readouterr().err
    # a real table with renamed columns: too few events per user for 20-event histories
    rows = ["uid,when,place,act"] + [f"u{u},2024-03-0{1 + d} 0{h}:00,home,act{h % 3}"
                                     for u in range(3) for d in range(3) for h in range(3)]
    (tmp_path / "x.csv").write_text("\n".join(rows) + "\n")
    args = ["eval", "--data", str(tmp_path / "x.csv"), "--quick", "--no-progress",
            "--column", "user=uid", "--column", "timestamp=when", "--column", "location=place",
            "--column", "behavior=act"]
    assert main(args) == 1
    assert "gives no training prediction samples with history_len=20" in capsys.readouterr().err


def test_eval_is_reproducible():
    from bua.models.baseline_eval import run_eval

    cfg = BaselineEvalConfig.quick(sim_users=12, models=("SASRec", "behaveGPT"), progress=False)
    assert run_eval(cfg).metrics == run_eval(cfg).metrics


def test_eval_cli_unknown_column_field_lists_the_valid_ones(tmp_path):
    import shutil
    import subprocess

    bua = shutil.which("bua")
    assert bua, "the bua console script is not installed"
    result = subprocess.run([bua, "eval", "--data", str(tmp_path / "log.csv"), "--column", "bogus=uid"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "unknown table field 'bogus'" in result.stderr and "valid fields: user, location" in result.stderr
