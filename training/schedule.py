"""The learning-rate schedule of App. F: linear warm-up from `initial_lr` to `lr`, then cosine
annealing down to `min_lr`."""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from bua.training.config import OptimizerConfig


def warmup_steps(config: OptimizerConfig, total_steps: int) -> int:
    """Warm-up length in optimizer steps: ceil(warmup_ratio * total), at least 1 when the ratio is > 0."""
    if config.warmup_ratio <= 0:
        return 0
    return max(1, math.ceil(config.warmup_ratio * total_steps))


def lr_at(step: int, config: OptimizerConfig, total_steps: int) -> float:
    """The learning rate for optimizer step `step` (0-based) of `total_steps`."""
    warm = warmup_steps(config, total_steps)
    if step < warm:
        return config.initial_lr + (config.lr - config.initial_lr) * step / warm
    decay = max(1, total_steps - warm)
    progress = min(1.0, (step - warm) / decay)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_with_warmup(optimizer: torch.optim.Optimizer, config: OptimizerConfig, total_steps: int) -> LambdaLR:
    """A LambdaLR whose lr at step s is `lr_at(s)`; the optimizer's groups must start at `config.lr`."""
    if total_steps < 1:
        raise ValueError(f"a schedule needs at least one step, got total_steps={total_steps}")
    for group in optimizer.param_groups:
        group["lr"] = config.lr
        group["initial_lr"] = config.lr
    return LambdaLR(optimizer, lambda step: lr_at(step, config, total_steps) / config.lr)
