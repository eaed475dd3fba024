"""The projector (Eq. 1): a 2-layer MLP from the encoder width to the LLM hidden size, and the
``SoftTokenizer`` that turns (events, mask) into soft tokens. Training and the ONNX export
both go through ``SoftTokenizer``, so there is one code path.

Modes:
- ``per_event`` (default): one soft token per event, from the encoder states ``states`` picks;
  ``soft_mask`` is the event mask.
- ``pooled``: ``n_pooled_tokens`` soft tokens, each a learned query attending over the real
  events' states (masked softmax), then the MLP; ``soft_mask`` is True for every token of a row
  that has at least one event.
- ``item_emb`` (Table 4 ablation): the same MLP fed the encoder's item embeddings (summed
  day/time/location/behavior embeddings, no sequence context) instead of the states.

``states`` picks the encoder states the first two modes read: ``penultimate`` (the paper's
anchor) or ``final`` (a bua extension: the last layer after its LayerNorm, what the encoder's
next-event heads read).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bua.models._io import config_from_dict, load_config, load_state, save_module
from bua.models.encoder import BehaviorEncoder

MODES = ("per_event", "pooled", "item_emb")
STATES = ("penultimate", "final")


@dataclass
class ProjectorConfig:
    in_dim: int
    out_dim: int
    hidden_dim: int | None = None  # None: out_dim
    mode: str = "per_event"
    n_pooled_tokens: int = 4
    states: str = "penultimate"  # which encoder states feed per_event / pooled (module doc)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown projector mode {self.mode!r}; choose one of {MODES}")
        if self.states not in STATES:
            raise ValueError(f"unknown projector states {self.states!r}; choose one of {STATES}")
        if self.mode == "item_emb" and self.states != "penultimate":
            raise ValueError(f"projector mode item_emb reads item embeddings, not encoder states: "
                             f"states={self.states!r} does not apply")
        for name in ("in_dim", "out_dim", "n_pooled_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ProjectorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise ValueError(f"ProjectorConfig.hidden_dim must be >= 1, got {self.hidden_dim}")

    @property
    def hidden(self) -> int:
        return self.hidden_dim or self.out_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProjectorConfig":
        return config_from_dict(cls, d)


class Projector(nn.Module):
    """Eq. 1: ``Linear(in_dim, hidden) -> GELU -> Linear(hidden, out_dim)`` (+ pooling queries
    in ``pooled`` mode)."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        self.mlp = nn.Sequential(nn.Linear(config.in_dim, config.hidden), nn.GELU(),
                                 nn.Linear(config.hidden, config.out_dim))
        if config.mode == "pooled":
            self.queries = nn.Parameter(torch.randn(config.n_pooled_tokens, config.in_dim) * 0.02)

    @property
    def mode(self) -> str:
        return self.config.mode

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` ``[B, L, in_dim]``, ``mask`` bool ``[B, L]`` ->
        ``(soft_tokens [B, T, out_dim], soft_mask bool [B, T])``; T = L, or n_pooled_tokens."""
        if features.shape[-1] != self.config.in_dim:
            raise ValueError(
                f"projector expects features of width in_dim={self.config.in_dim}, got {features.shape[-1]}"
            )
        if self.config.mode != "pooled":
            return self.mlp(features), mask
        scores = torch.matmul(features, self.queries.t()) * (1.0 / math.sqrt(self.config.in_dim))
        scores = scores.masked_fill(~mask.unsqueeze(-1), -1e9)  # [B, L, T]; finite: no NaN rows
        weights = torch.softmax(scores, dim=1)
        pooled = torch.matmul(weights.transpose(1, 2), features)  # [B, T, in_dim]
        soft_mask = mask.any(dim=1, keepdim=True).expand(-1, self.config.n_pooled_tokens)
        return self.mlp(pooled), soft_mask

    @torch.no_grad()
    def scale_output(self, factor: float) -> None:
        """Multiply every soft token by ``factor`` (scales the last layer's weight and bias)."""
        last = self.mlp[-1]
        last.weight.mul_(factor)
        last.bias.mul_(factor)

    def save(self, directory: str | os.PathLike) -> None:
        """``directory/projector.safetensors`` + ``projector.json`` (atomic)."""
        save_module(self, self.config.to_dict(), directory, "projector")

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: str = "cpu") -> "Projector":
        model = cls(ProjectorConfig.from_dict(load_config(directory, "projector")))
        load_state(model, directory, "projector")
        return model.to(map_location).eval()


class SoftTokenizer(nn.Module):
    """(events, mask) -> (soft_tokens, soft_mask): encoder features chosen by the projector's
    mode, then the projector."""

    def __init__(self, encoder: BehaviorEncoder, projector: Projector) -> None:
        super().__init__()
        if projector.config.in_dim != encoder.config.d_model:
            raise ValueError(
                f"projector in_dim={projector.config.in_dim} does not match the encoder's "
                f"d_model={encoder.config.d_model}"
            )
        self.encoder = encoder
        self.projector = projector

    def features(self, events: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.projector.mode == "item_emb":
            return self.encoder.item_embeddings(events, mask)
        if self.projector.config.states == "final":
            return self.encoder.final_states(events, mask)
        states, _ = self.encoder.encode(events, mask)
        return states

    def forward(self, events: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.projector(self.features(events, mask), mask)
