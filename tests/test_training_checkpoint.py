"""The run directory contract: atomic writes, and `load_run` as bua-export reads it."""
from __future__ import annotations

import json
import os

import pytest
import torch

from bua.fsio import commit_dir, new_temp_dir, recover_dir, write_dir
from bua.training.checkpoint import RunDirError, load_run, new_run_record, stage_dir, update_stage, write_run

torch.set_num_threads(1)


def test_write_dir_replaces_atomically_and_recovers(tmp_path):
    final = tmp_path / "best"
    write_dir(final, lambda d: (d / "a.txt").write_text("1"))
    write_dir(final, lambda d: (d / "a.txt").write_text("2"))
    assert (final / "a.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    # a crash between the two renames of commit_dir leaves only best.old: recovered on read
    os.rename(final, tmp_path / "best.old")
    assert (recover_dir(final) / "a.txt").read_text() == "2"
    # a failing build leaves the old directory untouched and no temp behind
    with pytest.raises(RuntimeError):
        write_dir(final, lambda d: (_ for _ in ()).throw(RuntimeError("boom")))
    assert (final / "a.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    tmp = new_temp_dir(final)
    (tmp / "b.txt").write_text("3")
    commit_dir(tmp, final)
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]


def _fake_run(tmp_path, stages_done):
    """A run directory written with the same helpers the curriculum uses."""
    from bua.backbones import resolve_backbone
    from bua.dialogue import default_template
    from bua.fsio import write_json
    from bua.models.encoder import BehaviorEncoder, EncoderConfig
    from bua.models.projector import Projector, ProjectorConfig, SoftTokenizer
    from bua.training.config import LoraSettings, TrainConfig
    from bua.training.model import BUAModel
    from bua.training.state import save_weights

    run = tmp_path / "run"
    run.mkdir()
    backbone = resolve_backbone("tiny-llama")
    from bua.vocab import Vocabulary

    vocab = Vocabulary.from_names([f"behavior {i}" for i in range(37)], [f"place{i}" for i in range(6)])
    enc = BehaviorEncoder(EncoderConfig.tiny(vocab.n_behaviors, vocab.n_locations))
    model = BUAModel.from_backbone(backbone, SoftTokenizer(enc, Projector(ProjectorConfig(32, 64))),
                                   LoraSettings(r=2, alpha=4), default_template())
    write_run(run, new_run_record(TrainConfig().to_dict(), "tiny-llama", backbone, "llama", 64,
                                  ["stage1", "stage2"]))
    vocab.save(run / "vocab.json")
    write_json(run / "chat_format.json", model.chat.to_dict())
    write_json(run / "dialogue_template.json", model.template.to_dict())
    model.tokenizer.save_pretrained(str(run / "tokenizer"))
    enc.save(run / "encoder")
    for stage in stages_done:
        write_dir(stage_dir(run, stage, "best"), lambda d: save_weights(d, model, with_adapter=stage != "stage1"))
        update_stage(run, stage, status="done", best_step=3, best_val_loss=1.5)
    return run, model


def test_load_run_reads_what_export_needs(tmp_path):
    run, model = _fake_run(tmp_path, ["stage1", "stage2"])
    ck = load_run(run)
    assert ck.final_stage == "stage2" and ck.arch == "llama" and ck.hidden_size == 64
    assert ck.adapter_dir == run / "stage2" / "best" / "adapter"
    assert (ck.adapter_dir / "adapter_config.json").is_file()
    assert (ck.projector_dir / "projector.safetensors").is_file()
    assert ck.encoder_dir == run / "encoder" and (ck.backbone_dir / "config.json").is_file()
    assert ck.vocab.n_behaviors == 37 and ck.chat_format == model.chat
    assert ck.dialogue_template == model.template
    assert ck.stages["stage2"]["best_val_loss"] == 1.5 and ck.stages["stage3"]["status"] == "skipped"
    one = load_run(run, stage="stage1")
    assert one.adapter_dir is None and one.projector_dir == run / "stage1" / "best"
    from bua.models.projector import Projector

    Projector.load(ck.projector_dir)  # the encoder engineer's loader reads our projector files


def test_load_run_errors_name_the_problem(tmp_path):
    with pytest.raises(RunDirError, match="not a training run directory: run.json is missing"):
        load_run(tmp_path)
    run, _ = _fake_run(tmp_path, [])
    with pytest.raises(RunDirError, match="no curriculum stage has finished yet.*stage1 pending.*stage3 skipped"):
        load_run(run)
    update_stage(run, "stage1", status="done")
    with pytest.raises(
        RunDirError, match=r"says stage1 is done, but these files are missing:\n.*projector.safetensors"
    ):
        load_run(run)
    with pytest.raises(RunDirError, match="stage3 has status 'skipped'"):
        load_run(run, stage="stage3")
    record = json.loads((run / "run.json").read_text())
    record["format_version"] = 99
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(RunDirError, match="format_version 99"):
        load_run(run)


@pytest.mark.parametrize(
    "remove, names",
    [
        ("stage2/best/adapter", ["adapter_config.json", "adapter_model.safetensors"]),
        ("encoder/encoder.json", ["encoder.json"]),
        ("tokenizer", ["tokenizer_config.json"]),
        ("vocab.json", ["vocab.json"]),
    ],
)
def test_a_checkpoint_missing_files_its_run_json_implies_is_refused(tmp_path, remove, names):
    # e.g. a copied run whose stage-2 adapter was lost: exporting it would silently drop LoRA.
    import shutil

    run, _ = _fake_run(tmp_path, ["stage1", "stage2"])
    target = run / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(RunDirError, match="says stage2 is done, but these files are missing") as err:
        load_run(run)
    assert all(name in str(err.value) for name in names)
