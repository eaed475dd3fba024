"""Building the pieces of a run: the pretrained behavior encoder, the BUAModel around a
backbone, and a trained model back from a run directory."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import torch

from bua.fsio import write_dir, write_json
from bua.training import distributed
from bua.training.config import TrainConfig


def encoder_max_len(config: TrainConfig, size_max_len: int) -> int:
    return max(size_max_len, config.data.history_len, config.data.generation_history_len)


def ensure_encoder(run_dir: Path, config: TrainConfig, data, ctx: distributed.DistContext, progress: bool = True):
    """RUN_DIR/encoder: reused if present, copied from `encoder.pretrained`, or pretrained on the
    training users (validation users for early stopping) by rank 0. Returns the loaded encoder."""
    from bua.models.encoder import BehaviorEncoder, EncoderConfig
    from bua.models.pretrain import pretrain_encoder

    target = run_dir / "encoder"
    if ctx.is_main and not (target / "encoder.safetensors").is_file():
        settings = config.encoder
        if settings.pretrained:
            src = Path(settings.pretrained)
            if not (src / "encoder.safetensors").is_file():
                raise FileNotFoundError(f"encoder.pretrained = {src}: no encoder.safetensors there")
            write_dir(target, lambda d: [shutil.copy2(src / f, d / f) for f in ("encoder.safetensors", "encoder.json")])
        else:
            vocab = data.vocab
            base = EncoderConfig.sized(settings.size, vocab.n_behaviors, vocab.n_locations)
            enc_config = EncoderConfig.sized(settings.size, vocab.n_behaviors, vocab.n_locations,
                                             max_len=encoder_max_len(config, base.max_len))
            print(f"[encoder] pretraining a {settings.size} behavior encoder on {len(data.train)} users "
                  f"({vocab.n_behaviors} behaviors, {vocab.n_locations} locations)", flush=True)
            encoder, report = pretrain_encoder(
                list(data.train), list(data.val), enc_config, max_epochs=settings.pretrain_epochs,
                batch_size=settings.pretrain_batch_size, lr=settings.pretrain_lr, patience=settings.pretrain_patience,
                seed=config.seed, time_budget_s=settings.pretrain_time_budget_s, progress=progress)
            print(f"[encoder] {report.summary()}", flush=True)

            def build(d: Path) -> None:
                encoder.save(d)
                write_json(d / "pretrain_report.json", report.to_dict())

            write_dir(target, build)
    distributed.barrier(ctx)
    encoder = BehaviorEncoder.load(target, map_location=str(ctx.device))
    encoder.config.check_vocab(data.vocab.n_behaviors, data.vocab.n_locations, "the run's dataset")
    longest = max(config.data.history_len, config.data.generation_history_len)
    if encoder.config.max_len < longest:
        raise ValueError(f"the encoder in {target} reads at most {encoder.config.max_len} events but the data "
                         f"config asks for histories of {longest} (data.history_len / generation_history_len)")
    return encoder


def build_model(config: TrainConfig, encoder, backbone_dir: Path, device: torch.device, template=None, chat=None,
                adapter_dir: Optional[Path] = None):
    """A BUAModel with a fresh projector (seeded by `config.seed`) and a fresh LoRA (or `adapter_dir`)."""
    from transformers import AutoConfig

    from bua.models.projector import Projector, ProjectorConfig, SoftTokenizer
    from bua.training.model import BUAModel

    hidden = AutoConfig.from_pretrained(str(backbone_dir)).hidden_size
    torch.manual_seed(config.seed)
    projector = Projector(ProjectorConfig(in_dim=encoder.config.d_model, out_dim=hidden,
                                          hidden_dim=config.encoder.projector_hidden,
                                          mode=config.encoder.projector_mode,
                                          n_pooled_tokens=config.encoder.n_pooled_tokens,
                                          states=config.encoder.projector_states))
    soft = SoftTokenizer(encoder, projector)
    m = config.model
    template = template or config.data.template()
    return BUAModel.from_backbone(backbone_dir, soft, m.lora, template, dtype=m.dtype,
                                  device=device, gradient_checkpointing=m.gradient_checkpointing, chat=chat,
                                  adapter_dir=adapter_dir, autocast=m.autocast)


def load_trained(run_dir: str | Path, stage: Optional[str] = None, device: str | torch.device = "cpu"):
    """(BUAModel with the stage's best projector and adapter, TrainConfig, RunCheckpoint)."""
    from bua.models.encoder import BehaviorEncoder
    from bua.training.checkpoint import load_run
    from bua.training.config import config_from_dict
    from bua.training.state import load_projector

    ck = load_run(run_dir, stage)
    config = config_from_dict(ck.config, source=f"{run_dir}/run.json")
    encoder = BehaviorEncoder.load(ck.encoder_dir, map_location=str(device))
    model = build_model(config, encoder, ck.backbone_dir, torch.device(device), ck.dialogue_template,
                        ck.chat_format, ck.adapter_dir)
    load_projector(model, ck.projector_dir)
    model.eval()
    return model, config, ck
