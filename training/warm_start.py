"""Projector warm start, a bua extension of the curriculum (not in the paper).

A fresh projector emits soft tokens that point nowhere the LLM knows (and, from a default init,
with about three times the norm of its token embeddings), so stages 1-2 spend their few CPU
steps finding the LLM's embedding space before the LLM can learn to read anything. The warm
start fits the projector first, without a single LLM forward pass: on the training users'
encoder states, each soft token is trained to point at the LLM's own embedding of a behavior
name (softmax over cosine similarities to the behavior names' mean token embeddings,
cross-entropy with the target behavior) at the norm of an ordinary token embedding. The target
(`WarmStartSettings.target`) is the event's own behavior (`own`: a history enters the LLM
reading roughly like the words of what the user did) or the behavior that follows it (`next`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bua.models.pretrain import make_windows, pad_windows
from bua.models.projector import SoftTokenizer
from bua.training.config import WarmStartSettings


@dataclass
class WarmStartReport:
    steps: int
    seconds: float
    target_norm: float
    soft_norm_before: float
    soft_norm_after: float
    val_acc_before: float  # target behavior = the nearest behavior name, held-out users
    val_acc_after: float
    n_train_windows: int
    target: str = "next"  # WarmStartSettings.target

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"projector warm start: {self.steps} steps in {self.seconds:.0f}s, soft-token norm "
                f"{self.soft_norm_before:.2f} -> {self.soft_norm_after:.2f} (token embeddings {self.target_norm:.2f}), "
                f"nearest behavior name = {self.target} behavior {self.val_acc_before:.3f} -> {self.val_acc_after:.3f} "
                f"on validation users")


def behavior_name_embeddings(embedding: torch.Tensor, tokenizer, names: Sequence[str]) -> torch.Tensor:
    """[n_behaviors, hidden]: the mean input-embedding row of each name's tokens, as an answer
    spells it (no leading space)."""
    rows = []
    for name in names:
        ids = tokenizer(name, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"behavior name {name!r} tokenizes to nothing")
        rows.append(embedding[torch.tensor(ids, device=embedding.device)].float().mean(0))
    return torch.stack(rows)


def _behavior_targets(events: torch.Tensor, mask: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions that have a target [B, L] bool, the target behavior there [B, L]): every real
    event's own behavior (`kind` "own"), or the next behavior where a next event is real ("next")."""
    if kind == "own":
        return mask, events[..., 3]
    if kind != "next":
        raise ValueError(f"warm start target must be 'own' or 'next', got {kind!r}")
    valid = torch.zeros_like(mask)
    valid[:, :-1] = mask[:, :-1] & mask[:, 1:]
    target = torch.zeros_like(events[..., 3])
    target[:, :-1] = events[:, 1:, 3]
    return valid, target


def _norms(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2 norm of every valid soft token, in fp32."""
    return tokens[mask].float().norm(dim=-1)


def warm_start_projector(soft: SoftTokenizer, embedding: torch.Tensor, tokenizer, behavior_names: Sequence[str],
                         train_users: Sequence, val_users: Sequence, max_len: int,
                         settings: WarmStartSettings, seed: int) -> WarmStartReport:
    """Trains `soft.projector` in place (the encoder stays frozen); see the module doc."""
    if soft.projector.mode == "pooled":
        raise ValueError("encoder.warm_start needs one soft token per event (projector_mode per_event or "
                         "item_emb), not pooled tokens")
    start = time.monotonic()
    device = embedding.device
    names = behavior_name_embeddings(embedding.detach(), tokenizer, behavior_names)
    directions = F.normalize(names, dim=-1)
    target_norm = float(embedding.detach().float().norm(dim=-1).mean())
    train = make_windows(train_users, max_len, max(1, max_len // 2))
    val = make_windows(val_users, max_len, max_len)
    if not train:
        raise ValueError("projector warm start: no training user has two or more events")
    soft.encoder.eval()

    def features(windows):
        events, mask = pad_windows(windows, str(device))
        with torch.no_grad():
            feats = soft.features(events, mask)
        valid, target = _behavior_targets(events, mask, settings.target)
        return feats, mask, valid, target

    def evaluate(windows) -> tuple[float, float]:
        if not windows:
            return float("nan"), float("nan")
        feats, mask, valid, target = features(windows)
        with torch.no_grad():
            tokens, _ = soft.projector(feats, mask)
        acc = (tokens[valid].float() @ directions.t()).argmax(-1).eq(target[valid]).float().mean()
        return float(acc), float(_norms(tokens, mask).mean())

    acc_before, norm_before = evaluate(val)
    projector = soft.projector
    projector.train()
    optimizer = torch.optim.Adam(projector.parameters(), lr=settings.lr)
    rng = np.random.default_rng(seed)
    for _ in range(settings.steps):
        batch = [train[i] for i in rng.choice(len(train), size=min(settings.batch_size, len(train)), replace=False)]
        feats, mask, valid, target = features(batch)
        tokens, _ = projector(feats, mask)
        picked = tokens[valid].float()
        logits = F.normalize(picked, dim=-1) @ directions.t() / settings.temperature
        norm_gap = _norms(tokens, mask) / target_norm - 1.0
        loss = F.cross_entropy(logits, target[valid]) + settings.norm_weight * norm_gap.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    projector.eval()
    # The cosine cross-entropy ignores scale, and against a target it can learn (an event's own
    # behavior) it outweighs the norm term under Adam; rescaling the last layer sets the mean
    # norm exactly and leaves every direction, hence the accuracy, as trained.
    feats, mask, _, _ = features(train[:256])
    with torch.no_grad():
        tokens, _ = projector(feats, mask)
    projector.scale_output(target_norm / float(_norms(tokens, mask).mean()))
    acc_after, norm_after = evaluate(val)
    return WarmStartReport(settings.steps, time.monotonic() - start, target_norm, norm_before, norm_after,
                           acc_before, acc_after, len(train), settings.target)
