"""The training run directory (docs/ARCHITECTURE.md, "Training run directory") and
`load_run`, through which `bua-export` reads a finished run.

```
RUN_DIR/
  run.json                resolved config, backbone (name, local HF dir, arch, hidden size),
                          per-stage status / best step / validation loss, the final stage
  vocab.json  chat_format.json  dialogue_template.json
  tokenizer/              the backbone tokenizer (save_pretrained)
  encoder/                encoder.safetensors + encoder.json (the frozen encoder)
  stageN/best/            projector.safetensors + projector.json, adapter/ (peft) once LoRA trained
  stageN/last/            the same + trainer_state.pt, rng_rank<R>.pt (for --resume)
  stageN/log.jsonl        loss per step, task and round; lr; validation
  loss_curves.png
```

Every file and directory is written atomically (temp path, then rename).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bua.fsio import read_json, recover_dir, write_json

RUN_FORMAT_VERSION = 1
STAGE_ORDER = ("stage1", "stage2", "stage3")


class RunDirError(ValueError):
    """A run directory that is missing, incomplete or does not fit the request."""


@dataclass(frozen=True)
class RunCheckpoint:
    """What `load_run` finds in a run directory: everything export and evaluation need."""

    run_dir: Path
    backbone: str  # the configured name or path
    backbone_dir: Path  # local HF checkpoint directory of the base LLM
    arch: str  # HF model_type: "qwen2", "llama", ...
    hidden_size: int
    vocab: Any  # bua.vocab.Vocabulary
    chat_format: Any  # bua.chat.ChatFormat
    dialogue_template: Any  # bua.dialogue.DialogueTemplate
    tokenizer_dir: Path
    encoder_dir: Path
    final_stage: str  # the last finished stage
    projector_dir: Path  # holds projector.safetensors + projector.json
    adapter_dir: Optional[Path]  # peft adapter directory, None when no stage trained LoRA
    config: dict[str, Any]  # the resolved TrainConfig as a dict
    stages: dict[str, dict[str, Any]]  # run.json's per-stage records


LORA_STAGES = ("stage2", "stage3")  # stages that train LoRA: their checkpoints hold an adapter


def run_json_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "run.json"


def read_run(run_dir: str | Path) -> dict[str, Any]:
    path = run_json_path(run_dir)
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a training run directory: {path.name} is missing "
                          "(python training/curriculum.py --out RUN_DIR writes one)")
    record = read_json(path)
    version = record.get("format_version")
    if version != RUN_FORMAT_VERSION:
        raise RunDirError(f"{path}: format_version {version!r}; this bua reads {RUN_FORMAT_VERSION}")
    return record


def write_run(run_dir: str | Path, record: dict[str, Any]) -> None:
    write_json(run_json_path(run_dir), record)


def update_stage(run_dir: str | Path, stage: str, **fields: Any) -> dict[str, Any]:
    """Merges `fields` into run.json's record of `stage` (and recomputes `final_stage`)."""
    record = read_run(run_dir)
    record["stages"].setdefault(stage, {}).update(fields)
    record["final_stage"] = final_stage(record)
    write_run(run_dir, record)
    return record


def final_stage(record: dict[str, Any]) -> Optional[str]:
    done = [s for s in STAGE_ORDER if record["stages"].get(s, {}).get("status") == "done"]
    return done[-1] if done else None


def stage_dir(run_dir: str | Path, stage: str, kind: str) -> Path:
    """RUN_DIR/stageN/{best,last}, restored if a crash interrupted its replacement."""
    if kind not in ("best", "last"):
        raise ValueError(f"checkpoint kind must be 'best' or 'last', got {kind!r}")
    return recover_dir(Path(run_dir) / stage / kind)


def load_run(run_dir: str | Path, stage: Optional[str] = None) -> RunCheckpoint:
    """Reads a run directory. `stage` picks a finished stage (default: the final one)."""
    from bua.chat import ChatFormat
    from bua.dialogue import DialogueTemplate
    from bua.vocab import Vocabulary

    run_dir = Path(run_dir)
    record = read_run(run_dir)
    status = {s: record["stages"].get(s, {}).get("status", "pending") for s in STAGE_ORDER}
    chosen = stage or record.get("final_stage")
    if chosen is None:
        raise RunDirError(f"{run_dir}: no curriculum stage has finished yet (status: "
                          f"{', '.join(f'{s} {v}' for s, v in status.items())}); finish one with "
                          "`python training/curriculum.py --resume --out RUN_DIR ...`")
    if chosen not in STAGE_ORDER:
        raise RunDirError(f"unknown stage {chosen!r}; valid: {', '.join(STAGE_ORDER)}")
    if status[chosen] != "done":
        raise RunDirError(f"{run_dir}: {chosen} has status {status[chosen]!r}, not 'done'")
    best = stage_dir(run_dir, chosen, "best")
    adapter = best / "adapter"
    encoder_dir = run_dir / record["encoder_dir"]
    # Every file run.json implies, so that a damaged copy is refused instead of exported wrong
    # (a missing adapter would otherwise read as "no stage trained LoRA").
    expected = {
        best / "projector.safetensors": f"{chosen}'s projector",
        best / "projector.json": f"{chosen}'s projector",
        encoder_dir / "encoder.safetensors": "the behavior encoder",
        encoder_dir / "encoder.json": "the behavior encoder",
        run_dir / "tokenizer" / "tokenizer_config.json": "the tokenizer",
        run_dir / "vocab.json": "the vocabularies",
        run_dir / "chat_format.json": "the chat format",
        run_dir / "dialogue_template.json": "the dialogue template",
    }
    if chosen in LORA_STAGES:
        expected[adapter / "adapter_config.json"] = f"the LoRA adapter ({chosen} trains LoRA)"
        expected[adapter / "adapter_model.safetensors"] = f"the LoRA adapter ({chosen} trains LoRA)"
    missing = [f"{path} ({what})" for path, what in expected.items() if not path.is_file()]
    if missing:
        raise RunDirError(
            f"{run_dir}: run.json says {chosen} is done, but these files are missing:\n  "
            + "\n  ".join(missing)
            + "\nThe run directory is damaged or incompletely copied; "
            "copy it again, or rerun the stage with `python training/curriculum.py --resume`"
        )
    adapter_dir = adapter if chosen in LORA_STAGES else None
    backbone = record["backbone"]
    backbone_dir = Path(backbone["dir"])
    if not (backbone_dir / "config.json").is_file():
        raise RunDirError(
            f"{run_dir}: the backbone directory {backbone_dir} recorded in run.json "
            "is gone; restore it (bua.backbones.resolve_backbone rebuilds known names)"
        )
    return RunCheckpoint(
        run_dir=run_dir,
        backbone=backbone["name"],
        backbone_dir=backbone_dir,
        arch=backbone["arch"],
        hidden_size=int(backbone["hidden_size"]),
        vocab=Vocabulary.load(run_dir / "vocab.json"),
        chat_format=ChatFormat.from_dict(read_json(run_dir / "chat_format.json")),
        dialogue_template=DialogueTemplate.from_dict(read_json(run_dir / "dialogue_template.json")),
        tokenizer_dir=run_dir / "tokenizer",
        encoder_dir=encoder_dir,
        final_stage=chosen,
        projector_dir=best,
        adapter_dir=adapter_dir,
        config=record["config"],
        stages=record["stages"],
    )


def new_run_record(
    config: dict[str, Any], backbone_name: str, backbone_dir: Path, arch: str, hidden_size: int, stages: list[str]
) -> dict[str, Any]:
    return {
        "format_version": RUN_FORMAT_VERSION,
        "config": config,
        "backbone": {
            "name": backbone_name,
            "dir": str(Path(backbone_dir).resolve()),
            "arch": arch,
            "hidden_size": hidden_size,
        },
        "encoder_dir": "encoder",
        "stages_requested": stages,
        "stages": {s: {"status": "pending" if s in stages else "skipped"} for s in STAGE_ORDER},
        "final_stage": None,
    }
