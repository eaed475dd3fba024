"""The curriculum end to end (what `python training/curriculum.py` runs): data, encoder,
BUAModel, stages 1 -> 2 -> 3 (any subset, in order), checkpoints, log, plot, evaluation."""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from bua.dialogue import GENERATE
from bua.fsio import write_json
from bua.training import distributed
from bua.training.checkpoint import (
    STAGE_ORDER,
    RunDirError,
    new_run_record,
    read_run,
    stage_dir,
    update_stage,
    write_run,
)
from bua.training.config import DataConfig, TrainConfig, config_from_dict, load_config
from bua.training.data import STAGE_TASKS
from bua.training.model import resolve_pad_multiple

STAGE_NAMES = {"1": "stage1", "2": "stage2", "3": "stage3", "stage1": "stage1", "stage2": "stage2", "stage3": "stage3"}


@dataclass
class RunOptions:
    """Command-line options of the curriculum (see curriculum.py --help)."""

    config: Path
    out: Path
    stages: Optional[list[str]] = None  # None: every stage the config enables
    resume: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    evaluate: Optional[bool] = None  # None: the config's eval.enabled
    progress: bool = True
    init_from: Optional[Path] = None
    init_stages: Optional[list[str]] = None  # stages to take from init_from (default: all before stages[0])


def parse_stages(text: str) -> list[str]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if part not in STAGE_NAMES:
            raise ValueError(f"--stages: unknown stage {part!r}; use numbers 1,2,3 (e.g. --stages 2,3)")
        out.append(STAGE_NAMES[part])
    if len(set(out)) != len(out):
        raise ValueError(f"--stages names a stage twice: {text!r}")
    return sorted(out, key=STAGE_ORDER.index)


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def _prepare_run_dir(opts: RunOptions, config: TrainConfig, stages: list[str], ctx: distributed.DistContext,
                     backbone_dir: Path, model, exists: bool) -> dict:
    """Creates run.json and the static files, or checks them on --resume; returns the record."""
    out = opts.out
    if ctx.is_main:
        if exists:
            record = read_run(out)
            for s in stages:
                if record["stages"][s].get("status") == "skipped":
                    record["stages"][s]["status"] = "pending"
            record["stages_requested"] = sorted(set(record.get("stages_requested", [])) | set(stages),
                                                key=STAGE_ORDER.index)
        else:
            out.mkdir(parents=True, exist_ok=True)
            arch = model.lm.get_base_model().config.model_type
            record = new_run_record(config.to_dict(), config.model.backbone, backbone_dir, arch, model.hidden_size,
                                    stages)
            model.tokenizer.save_pretrained(str(out / "tokenizer"))
            write_json(out / "chat_format.json", model.chat.to_dict())
            write_json(out / "dialogue_template.json", model.template.to_dict())
        write_run(out, record)
    distributed.barrier(ctx)
    return read_run(out)


def _init_stages(opts: RunOptions, stages: list[str]) -> list[str]:
    """The stages --init-from may take: --init-stages, else every stage before the first of --stages."""
    first = STAGE_ORDER.index(stages[0])
    take = opts.init_stages if opts.init_stages is not None else list(STAGE_ORDER[:first])
    late = [s for s in take if STAGE_ORDER.index(s) >= first]
    if late:
        raise RunDirError(f"--init-stages {','.join(late)}: only stages before the first of --stages ({stages[0]}) "
                          "can be taken from another run")
    return take


def _recorded_config(record: dict, source: Path) -> dict:
    """A run's recorded config with the defaults of fields added after it was written."""
    return config_from_dict(record["config"], str(source / "run.json")).to_dict()


def _check_same_config(out: Path, record: dict, config: TrainConfig) -> None:
    diff = _config_diff(_recorded_config(record, out), config.to_dict())
    if diff:
        raise RunDirError(f"--resume: {out} was started with another config; differences: "
                          + "; ".join(diff[:8]) + ("" if len(diff) <= 8 else f" (+{len(diff) - 8} more)"))


def _copy_earlier_stages(
    opts: RunOptions, config: TrainConfig, stages: list[str], ctx: distributed.DistContext
) -> None:
    """--init-from OTHER_RUN: take OTHER_RUN's finished stages before the first requested one
    (their best/ weights and logs) as this run's, so an ablation need not retrain them."""
    src = opts.init_from
    other = read_run(src)
    take = _init_stages(opts, stages)
    if opts.init_stages is None:  # by default, the earlier stages the other run finished
        take = [s for s in take if other["stages"][s].get("status") == "done"]
    theirs, ours = _recorded_config(other, src), config.to_dict()
    # a layout switch for tasks that the taken stages never render does not change them
    rendered = {t for s in take for t in (config.stage(s).tasks or STAGE_TASKS[s])}
    for data in (theirs["data"], ours["data"]):
        for key in DataConfig.LAYOUT_TASK_FIELDS:
            data[key] = [t for t in data.get(key, []) if t in rendered]
        if GENERATE not in rendered:
            data.pop("generation_names", None)
    for section in ("data", "encoder", "model", "seed"):
        diff = _config_diff({"x": theirs[section]}, {"x": ours[section]})
        if diff:
            raise RunDirError(f"--init-from {src}: its {section} config differs from this run's: {'; '.join(diff[:5])}")
    if ctx.is_main:
        record = read_run(opts.out)
        for s in take:
            if other["stages"][s].get("status") != "done":
                raise RunDirError(
                    f"--init-from {src}: its {s} has status {other['stages'][s].get('status')!r}, not 'done'"
                )
            if record["stages"][s].get("status") == "done":
                continue
            for kind in ("best",):
                shutil.copytree(stage_dir(src, s, kind), opts.out / s / kind, dirs_exist_ok=False)
            if (src / s / "log.jsonl").is_file():
                shutil.copy2(src / s / "log.jsonl", opts.out / s / "log.jsonl")
            update_stage(opts.out, s, **{**other["stages"][s], "copied_from": str(src)})
    distributed.barrier(ctx)


def _done_stages(record: Optional[dict]) -> set[str]:
    """The stages a run record (run.json; None for a new run) holds as done."""
    return {s for s in STAGE_ORDER if record and record["stages"][s].get("status") == "done"}


def check_stage_plan(stages: list[str], config: TrainConfig, record: Optional[dict], run_dir: Path) -> None:
    """Fails fast (before any data or model work) when a requested stage lacks the earlier
    stage output it needs; `record` is the existing run.json (None for a new run)."""
    done = _done_stages(record)
    for stage in stages:
        earlier = {s for s in STAGE_ORDER[: STAGE_ORDER.index(stage)] if s in done or s in stages}
        wanted = config.stage(stage).continue_from
        if wanted is not None and wanted not in earlier:
            raise RunDirError(
                f"{stage} continues from {wanted} ({stage}.continue_from), but {wanted} has not finished "
                f"in {run_dir} and is not among --stages: run `--stages {wanted[-1]},{stage[-1]}`, or "
                f"`--init-from` a run that finished it, or set {stage}.continue_from: null"
            )
        if stage == "stage3" and not earlier:
            raise RunDirError(
                f"stage3 trains only LoRA with the projector frozen (sec. 3.3), so it needs a projector "
                f"trained by stage 1 or stage 2, and neither has finished in {run_dir} nor is among "
                "--stages. Run `--stages 1,3` / `--stages 2,3`, or `--init-from` a run that finished "
                "stage 1 or 2."
            )
        done.add(stage)


def _starts_fresh(stages: list[str], record: Optional[dict]) -> bool:
    """Whether a stage to train starts from a fresh projector (see _init_stage): the first one not
    yet done has no finished stage before it. Only then is the warm start's projector used."""
    done = _done_stages(record)
    pending = [s for s in stages if s not in done]
    return bool(pending) and not any(s in done for s in STAGE_ORDER[: STAGE_ORDER.index(pending[0])])


def _init_stage(model, run_dir: Path, stage: str, config: TrainConfig, fresh: dict[str, dict]) -> Optional[str]:
    """Loads the weights a stage starts from; returns the stage they came from (None: fresh)."""
    from bua.training.state import load_adapter, load_projector

    record = read_run(run_dir)
    status = {s: record["stages"][s].get("status") for s in STAGE_ORDER}
    earlier = [s for s in STAGE_ORDER[: STAGE_ORDER.index(stage)] if status[s] == "done"]
    wanted = config.stage(stage).continue_from
    if wanted is not None and status[wanted] != "done":
        raise RunDirError(
            f"{stage} continues from {wanted} ({stage}.continue_from), but {wanted} has not finished "
            f"in {run_dir} (status {status[wanted]!r}): run `--stages {wanted[-1]},{stage[-1]}`, or "
            f"`--init-from` a run that finished it, or set {stage}.continue_from: null"
        )
    source = wanted or (earlier[-1] if earlier else None)
    if source is None and stage == "stage3":
        raise RunDirError(
            f"stage3 trains only LoRA with the projector frozen (sec. 3.3), so it needs a projector "
            f"trained by stage 1 or stage 2, and none has finished in {run_dir} (status: "
            + ", ".join(f"{s} {v}" for s, v in status.items())
            + "). Run `--stages 1,3` / `--stages "
            "2,3`, or `--init-from` a run that finished stage 1 or 2."
        )
    with torch.no_grad():
        if source is None:
            model.projector.load_state_dict(fresh["projector"])
            for name, p in model.lm.named_parameters():
                if name in fresh["lora"]:
                    p.copy_(fresh["lora"][name])
            model.has_adapter = False
            return None
        best = stage_dir(run_dir, source, "best")
        load_projector(model, best)
        if (best / "adapter").is_dir():
            load_adapter(model, best / "adapter")
            model.has_adapter = True
        else:
            for name, p in model.lm.named_parameters():
                if name in fresh["lora"]:
                    p.copy_(fresh["lora"][name])
            model.has_adapter = False
    return source


def _warm_start(model, config: TrainConfig, data, out: Path, ctx: distributed.DistContext) -> None:
    """Fits the fresh projector before any stage (encoder.warm_start); the same on every rank."""
    from bua.training.warm_start import warm_start_projector

    report = warm_start_projector(
        model.soft_tokenizer,
        model.lm.get_input_embeddings().weight,
        model.tokenizer,
        list(data.vocab.behaviors),
        list(data.train),
        list(data.val),
        config.data.history_len,
        config.encoder.warm_start,
        config.seed,
    )
    if ctx.is_main:
        print(f"[warm start] {report.summary()}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "projector_warm_start.json", report.to_dict())


def run_curriculum(opts: RunOptions) -> dict[str, Any]:
    """Trains the requested stages into opts.out; returns the run summary (rank 0's view)."""
    from bua.backbones import resolve_backbone
    from bua.training.build import build_model, ensure_encoder
    from bua.training.data import build_stage, prepare
    from bua.training.runlog import plot_loss_curves
    from bua.training.state import seed_everything
    from bua.training.trainer import STAGE_INDEX, StageTrainer

    t0 = time.monotonic()
    config = load_config(opts.config, opts.overrides)
    stages = opts.stages or [s for s in STAGE_ORDER if config.stage(s).enabled]
    if not stages:
        raise ValueError("no stage to run: every stage is disabled in the config and --stages was not given")
    ctx = distributed.init_distributed(config.distributed, opts.device)
    try:
        seed_everything(config.seed)
        opts.out = Path(opts.out)
        exists = (opts.out / "run.json").is_file()  # checked before any rank writes there
        if exists and not opts.resume:
            raise RunDirError(f"{opts.out} already holds a run: pass --resume to continue it, or choose a new --out")
        record = read_run(opts.out) if exists else None
        if record is not None:
            _check_same_config(opts.out, record, config)
        if opts.init_from is not None:
            other = read_run(opts.init_from)
            take = _init_stages(opts, stages)
            record = {
                "stages": {
                    s: (
                        {"status": "done"}
                        if s in take and other["stages"][s].get("status") == "done"
                        else (record or {"stages": {}})["stages"].get(s, {})
                    )
                    for s in STAGE_ORDER
                }
            }
        check_stage_plan(stages, config, record, opts.out)
        if ctx.is_main:
            print(
                f"[run] {opts.out}: stages {', '.join(stages)} of {opts.config} on {ctx.device} x {ctx.world_size}",
                flush=True,
            )
        data = prepare(config.data)
        if ctx.is_main:
            backbone_dir = resolve_backbone(config.model.backbone)
        distributed.barrier(ctx)
        backbone_dir = resolve_backbone(config.model.backbone)
        if opts.init_from is not None and ctx.is_main and not (opts.out / "encoder").exists():
            src = Path(opts.init_from) / "encoder"
            if (src / "encoder.safetensors").is_file():
                opts.out.mkdir(parents=True, exist_ok=True)
                shutil.copytree(src, opts.out / "encoder")
        encoder = ensure_encoder(opts.out, config, data, ctx, progress=opts.progress)
        model = build_model(config, encoder, backbone_dir, ctx.device)
        if config.encoder.warm_start.enabled:
            if _starts_fresh(stages, record):
                _warm_start(model, config, data, opts.out, ctx)
            elif ctx.is_main:
                print("[warm start] skipped: every stage to train starts from a finished stage's projector", flush=True)
        fresh = {
            "projector": {k: v.detach().clone() for k, v in model.projector.state_dict().items()},
            "lora": {k: v.detach().clone() for k, v in model.lora_state().items()},
        }
        _prepare_run_dir(opts, config, stages, ctx, backbone_dir, model, exists)
        if ctx.is_main:
            data.vocab.save(opts.out / "vocab.json")
        if opts.init_from is not None:
            _copy_earlier_stages(opts, config, stages, ctx)
        results: dict[str, Any] = {}
        for stage in stages:
            record = read_run(opts.out)
            status = record["stages"][stage].get("status")
            if status == "done":
                if ctx.is_main:
                    print(
                        f"[{stage}] already done (best step {record['stages'][stage].get('best_step')}); skipping",
                        flush=True,
                    )
                results[stage] = record["stages"][stage]
                continue
            seed_everything(config.seed + 1000 * STAGE_INDEX[stage] + ctx.rank)  # own dropout noise per rank
            source = _init_stage(model, opts.out, stage, config, fresh)
            model.set_stage(stage)
            built = build_stage(data, stage, config.stage(stage), config.data, model)
            if ctx.is_main:
                print(
                    f"[{stage}] starts from {source + ' best' if source else 'a fresh projector and LoRA'}; "
                    f"dialogues: {built.counts}"
                    + (f", {built.dropped} dropped (> data.max_length)" if built.dropped else ""),
                    flush=True,
                )
            trainer = StageTrainer(
                model,
                stage,
                config.stage(stage),
                built.train,
                built.val,
                opts.out,
                ctx,
                config.seed,
                config.distributed.strategy,
                config.distributed.find_unused_parameters,
                progress=opts.progress,
                candidates=list(data.vocab.behaviors),
                behavior_counts=(data.vocab.behavior_counts(data.train).tolist()
                                 if config.stage(stage).distill_prior_adjustment else ()),
                pad_to_multiple=resolve_pad_multiple(config.model.pad_to_multiple, ctx.device),
            )
            resumed = opts.resume and status == "running" and trainer.resume()
            if ctx.is_main:
                update_stage(opts.out, stage, status="running", total_steps=trainer.total_steps, init_from=source)
            distributed.barrier(ctx)
            result = trainer.run()
            if stage in ("stage2", "stage3"):
                model.has_adapter = True
            if ctx.is_main:
                update_stage(
                    opts.out,
                    stage,
                    status="done",
                    **{k: _finite(v) for k, v in result.to_dict().items() if k != "stage"},
                    resumed=bool(resumed),
                )
                plot_loss_curves(opts.out, STAGE_ORDER)
                _print_stage(result)
            results[stage] = result.to_dict()
            distributed.barrier(ctx)
        record = read_run(opts.out)
        summary = {
            "run_dir": str(opts.out),
            "stages": {s: record["stages"][s] for s in STAGE_ORDER},
            "final_stage": record["final_stage"],
            "train_seconds": time.monotonic() - t0,
            "world_size": ctx.world_size,
            "device": str(ctx.device),
        }
        evaluate = config.eval.enabled if opts.evaluate is None else opts.evaluate
        if evaluate and ctx.is_main:
            from bua.training.evaluation import evaluate_model, write_report

            del model
            report = evaluate_model(opts.out, None, config, data, ctx.device, progress=opts.progress)
            write_report(opts.out, report)
            summary["eval"] = report
        if ctx.is_main:
            summary["seconds"] = time.monotonic() - t0
            write_json(opts.out / "summary.json", summary)
            _print_summary(summary)
        return summary
    finally:
        distributed.shutdown(ctx)


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v: Any) -> str:
    return (
        "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}" if isinstance(v, float) else str(v)
    )


def _print_stage(r) -> None:
    print(
        f"[{r.stage}] done: {r.steps} steps in {r.seconds:.0f}s, train loss {_fmt(r.first_train_loss)} -> "
        f"{_fmt(r.last_train_loss)}, validation {_fmt(r.first_val_loss)} -> best {_fmt(r.best_val_loss)} "
        f"(step {r.best_step})"
        + ("" if math.isnan(r.best_val_teacher_top1) else
           f", validation predictions whose top-1 is the encoder's {r.first_val_teacher_top1:.2f} -> "
           f"{r.best_val_teacher_top1:.2f}"),
        flush=True,
    )


def _print_summary(summary: dict[str, Any]) -> None:
    lines = [
        "",
        "== BUA curriculum summary ==",
        f"run dir: {summary['run_dir']}  ({summary['device']} x {summary['world_size']}, {summary['seconds']:.0f}s)",
        "| stage | status | steps | train loss first -> last | val loss first -> best (step) | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for s, rec in summary["stages"].items():
        lines.append(
            f"| {s} | {rec.get('status')} | {rec.get('steps', '-')} | {_fmt(rec.get('first_train_loss'))} -> "
            f"{_fmt(rec.get('last_train_loss'))} | {_fmt(rec.get('first_val_loss'))} -> "
            f"{_fmt(rec.get('best_val_loss'))} ({rec.get('best_step', '-')}) | "
            f"{'-' if rec.get('seconds') is None else format(rec['seconds'], '.0f')} |"
        )
    if "eval" in summary:
        from bua.training.evaluation import report_markdown

        lines += ["", report_markdown(summary["eval"])]
    print("\n".join(lines), flush=True)


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "summary.json").read_text())
