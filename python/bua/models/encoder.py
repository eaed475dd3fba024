"""The behavior encoder g_phi (sec. 3.2): a BehaveGPT-style causal transformer over events.

Input: ``events`` int64 ``[B, L, 4]`` with columns (day 0-6, minute 0..1439, location id,
behavior id) and ``mask`` bool ``[B, L]`` (True = real event). Padding may sit on either side
(positions count only real events). Ids are shifted by +1 inside the model so 0 is padding;
the time bucket (``minute // time_bucket_minutes``) is computed inside, so an exported graph
takes raw minutes.

Every op here exports to ONNX (hand-written attention with ``masked_fill``, no fused kernels).
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

MINUTES_PER_DAY = 1440
N_DAYS = 7

# Named sizes. `default` is the dataclass defaults (trains in minutes on a 2-core CPU on a few
# hundred simulated users); `tiny` is for tests (seconds); `large` is for a GPU.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_len": 64, "dropout": 0.0},
    "default": {},
    "large": {"d_model": 512, "n_layers": 8, "n_heads": 8, "max_len": 256},
}


@dataclass
class EncoderConfig:
    n_behaviors: int
    n_locations: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    max_len: int = 128
    time_bucket_minutes: int = 30
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("n_behaviors", "n_locations", "d_model", "n_layers", "n_heads", "max_len",
                     "time_bucket_minutes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"EncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"EncoderConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        if MINUTES_PER_DAY % self.time_bucket_minutes:
            raise ValueError(
                f"EncoderConfig.time_bucket_minutes={self.time_bucket_minutes} must divide 1440"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"EncoderConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def n_time_buckets(self) -> int:
        return MINUTES_PER_DAY // self.time_bucket_minutes

    @classmethod
    def sized(cls, size: str, n_behaviors: int, n_locations: int, **overrides: Any) -> "EncoderConfig":
        """A named size (``tiny``, ``default``, ``large``) for the given vocabularies."""
        if size not in SIZES:
            raise ValueError(f"unknown encoder size {size!r}; choose one of {sorted(SIZES)}")
        return cls(n_behaviors=n_behaviors, n_locations=n_locations, **{**SIZES[size], **overrides})

    @classmethod
    def tiny(cls, n_behaviors: int, n_locations: int, **overrides: Any) -> "EncoderConfig":
        return cls.sized("tiny", n_behaviors, n_locations, **overrides)

    @classmethod
    def default(cls, n_behaviors: int, n_locations: int, **overrides: Any) -> "EncoderConfig":
        return cls.sized("default", n_behaviors, n_locations, **overrides)

    @classmethod
    def large(cls, n_behaviors: int, n_locations: int, **overrides: Any) -> "EncoderConfig":
        return cls.sized("large", n_behaviors, n_locations, **overrides)

    def check_vocab(self, n_behaviors: int, n_locations: int, source: str = "the data") -> None:
        """Raise if this config's vocabulary sizes differ from the data's, naming both numbers."""
        problems = []
        if n_behaviors != self.n_behaviors:
            problems.append(f"n_behaviors={self.n_behaviors} but {source} has {n_behaviors} behaviors")
        if n_locations != self.n_locations:
            problems.append(f"n_locations={self.n_locations} but {source} has {n_locations} locations")
        if problems:
            raise ValueError("encoder config does not match the vocabulary: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EncoderConfig":
        return config_from_dict(cls, d)


def _exporting() -> bool:
    return bool(torch.jit.is_tracing() or torch.compiler.is_exporting()
                or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


class _Block(nn.Module):
    """Pre-LayerNorm transformer block with causal, padding-aware self-attention."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, h, d // h).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d // h))
        scores = scores.masked_fill(~allowed, float("-inf"))
        attn = self.drop(torch.softmax(scores, dim=-1))
        y = torch.matmul(attn, v).transpose(1, 2).reshape(b, length, d)
        x = x + self.drop(self.out(y))
        return x + self.drop(self.mlp(self.ln2(x)))


class BehaviorEncoder(nn.Module):
    """Causal transformer over events with next behavior / time bucket / location heads."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.day_emb = nn.Embedding(N_DAYS + 1, c.d_model, padding_idx=0)
        self.time_emb = nn.Embedding(c.n_time_buckets + 1, c.d_model, padding_idx=0)
        self.loc_emb = nn.Embedding(c.n_locations + 1, c.d_model, padding_idx=0)
        self.beh_emb = nn.Embedding(c.n_behaviors + 1, c.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(c.max_len, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(_Block(c.d_model, c.n_heads, c.dropout) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.behavior_head = nn.Linear(c.d_model, c.n_behaviors)
        self.time_head = nn.Linear(c.d_model, c.n_time_buckets)
        self.location_head = nn.Linear(c.d_model, c.n_locations)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    @property
    def d_model(self) -> int:
        return self.config.d_model

    # -- inputs --------------------------------------------------------------------------------

    def check_inputs(self, events: torch.Tensor, mask: torch.Tensor) -> None:
        """Shape, dtype and id-range checks with messages that name both numbers."""
        c = self.config
        if events.dim() != 3 or events.shape[-1] != 4:
            raise ValueError(
                f"events must be [batch, length, 4] (day, minute, location, behavior), got {tuple(events.shape)}"
            )
        if events.dtype != torch.int64:
            raise TypeError(f"events must be int64, got {events.dtype}")
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(events.shape[:2]):
            raise ValueError(
                f"mask must be bool {tuple(events.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
            )
        if events.shape[1] > c.max_len:
            raise ValueError(
                f"sequence length {events.shape[1]} exceeds the encoder's max_len={c.max_len}; "
                f"keep the last {c.max_len} events"
            )
        if events.numel() == 0:
            return
        # padding reads as id 0 (valid in every column); one device-to-host copy for all the
        # bounds, since every copy stalls a GPU's queue
        real = torch.where(mask.unsqueeze(-1), events, torch.zeros((), dtype=events.dtype, device=events.device))
        lows, highs = torch.stack((real.amin(dim=(0, 1)), real.amax(dim=(0, 1)))).tolist()
        limits = (("day", 0, N_DAYS, "7 days"), ("minute", 1, MINUTES_PER_DAY, "1440 minutes"),
                  ("location", 2, c.n_locations, f"n_locations={c.n_locations}"),
                  ("behavior", 3, c.n_behaviors, f"n_behaviors={c.n_behaviors}"))
        for name, col, n, what in limits:
            lo, hi = lows[col], highs[col]
            if lo < 0 or hi >= n:
                bad = hi if hi >= n else lo
                raise ValueError(f"events hold {name} id {bad} but the encoder has {what} "
                                 f"(valid ids 0..{n - 1})")

    def item_embeddings(self, events: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Summed day + time-bucket + location + behavior embeddings ``[B, L, d_model]``
        (no position: one vector per event on its own; zero at padding)."""
        if not _exporting():
            self.check_inputs(events, mask)
        m = mask.to(torch.int64)
        day = (events[..., 0] + 1) * m
        bucket = (torch.div(events[..., 1], self.config.time_bucket_minutes, rounding_mode="floor") + 1) * m
        loc = (events[..., 2] + 1) * m
        beh = (events[..., 3] + 1) * m
        return self.day_emb(day) + self.time_emb(bucket) + self.loc_emb(loc) + self.beh_emb(beh)

    def _hidden(self, events: torch.Tensor, mask: torch.Tensor, n_blocks: int) -> torch.Tensor:
        m = mask.to(torch.int64)
        positions = (torch.cumsum(m, dim=1) - 1).clamp(min=0)
        x = self.drop(self.item_embeddings(events, mask) + self.pos_emb(positions))
        length = events.shape[1]
        idx = torch.arange(length, device=events.device)
        causal = idx.unsqueeze(0) <= idx.unsqueeze(1)  # [L_q, L_k]
        eye = idx.unsqueeze(0) == idx.unsqueeze(1)
        # attend to earlier real events; always to yourself, so no row is fully masked
        allowed = ((causal.unsqueeze(0) & mask.unsqueeze(1)) | eye.unsqueeze(0)).unsqueeze(1)
        for block in self.blocks[:n_blocks]:
            x = block(x, allowed)
        return x

    # -- public API ----------------------------------------------------------------------------

    def final_states(self, events: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last layer's states after the final LayerNorm ``[B, L, d_model]`` (what the
        heads read)."""
        return self.ln_f(self._hidden(events, mask, self.config.n_layers))

    def forward(self, events: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Next-event logits at every position: ``behavior`` ``[B, L, n_behaviors]``,
        ``time`` ``[B, L, n_time_buckets]``, ``location`` ``[B, L, n_locations]``."""
        h = self.final_states(events, mask)
        return {"behavior": self.behavior_head(h), "time": self.time_head(h),
                "location": self.location_head(h)}

    def encode(self, events: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states, pooled)``: the penultimate layer's hidden states ``[B, L, d_model]`` (the
        paper's anchor: the residual stream after block n_layers-1, as HF's
        ``hidden_states[-2]``; the input embeddings when n_layers == 1) and ``pooled``
        ``[B, d_model]``, the state at each row's last real event (zeros for an empty row)."""
        states = self._hidden(events, mask, self.config.n_layers - 1)
        return states, last_valid(states, mask)

    # -- io ------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """``directory/encoder.safetensors`` + ``encoder.json`` (atomic)."""
        save_module(self, self.config.to_dict(), directory, "encoder")

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: str = "cpu") -> "BehaviorEncoder":
        model = cls(EncoderConfig.from_dict(load_config(directory, "encoder")))
        load_state(model, directory, "encoder")
        return model.to(map_location).eval()


def last_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x[b, last real position of row b]`` -> ``[B, D]`` (zeros where a row has no event)."""
    m = mask.to(torch.int64)
    idx = torch.arange(x.shape[1], device=x.device).unsqueeze(0) * m
    last = idx.argmax(dim=1)
    picked = x.gather(1, last.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)
    return picked * mask.any(dim=1, keepdim=True).to(x.dtype)
