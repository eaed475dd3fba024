"""Batches of tokenized dialogues for BUAModel.

An `Example` is one dialogue as the data layer tokenizes it (`bua.dialogue.TokenizedDialogue`:
ids with the soft slot as `n_soft` copies of `SOFT_TOKEN_ID`, per-position round ids and the
answer mask) plus the history events the soft tokens come from. `collate` pads a list of them
(right padding) into the tensors `BUAModel.forward` reads:

- input_ids [B, S] (soft positions hold `pad_id`, they are overwritten by soft tokens),
  attention_mask [B, S], soft_positions bool [B, S]
- labels [B, S] (-100 outside answers), loss_rounds [B, S] (-1 outside answers)
- round_tasks: per dialogue, the task of each round index (for per-task logging and App. J)
- events int64 [B, L, 4], events_mask bool [B, L]
- predict_starts [B, P]: per `predict` round (a dialogue's own, or one per branch of a
  shared-prefix example), the position whose next token is its first answer token, -1 where a
  row has fewer; predict_events [B, P]: how many history events that prediction sees (both for
  the encoder-distillation term)
- position_ids [B, S] and attention_4d bool [B, 1, S, S] (True = may attend), only when an
  example in the batch has branches (see `Branch`); otherwise None and the LM builds its own
  causal mask from attention_mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from bua.dialogue import PREDICT, SOFT_TOKEN_ID, TokenizedDialogue


@dataclass(frozen=True)
class Branch:
    """Positions [start, end) of a shared-prefix example that continue the trunk after its
    first `sees` positions: they attend to trunk positions < `sees` and causally to
    themselves, with position ids sees, sees + 1, ...; computed in one pass, each branch is
    exactly the dialogue trunk[:sees] + branch."""

    start: int
    end: int
    sees: int


@dataclass(frozen=True)
class Example:
    """One tokenized dialogue with its history and the task of every round; with `branches`,
    several dialogues that share a trunk (positions before the first branch)."""

    tokens: TokenizedDialogue
    events: np.ndarray  # int64 [L, 4]: day, minute, location, behavior
    round_tasks: tuple[str, ...]  # task of round 0, 1, ...
    user_id: str = ""
    branches: tuple[Branch, ...] = ()

    def __post_init__(self) -> None:
        soft = int((self.tokens.input_ids == SOFT_TOKEN_ID).sum())
        if soft != self.tokens.n_soft:
            raise ValueError(
                f"dialogue of user {self.user_id!r}: {soft} soft positions but n_soft={self.tokens.n_soft}"
            )
        rounds = self.tokens.round_ids[self.tokens.answer_mask]
        if rounds.size and int(rounds.max()) >= len(self.round_tasks):
            raise ValueError(
                f"dialogue of user {self.user_id!r}: answer round {int(rounds.max())} "
                f"but only {len(self.round_tasks)} round tasks"
            )
        if self.branches:
            trunk = self.branches[0].start
            ends = [trunk] + [b.end for b in self.branches[:-1]]
            for b, prev_end in zip(self.branches, ends):
                if b.start != prev_end or b.end <= b.start or not 0 < b.sees <= trunk:
                    raise ValueError(
                        f"dialogue of user {self.user_id!r}: branch {b} does not follow "
                        f"the trunk of {trunk} positions and the branch before it"
                    )
            if self.branches[-1].end != len(self.tokens):
                raise ValueError(
                    f"dialogue of user {self.user_id!r}: branches end at "
                    f"{self.branches[-1].end}, the dialogue at {len(self.tokens)}"
                )

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class Batch:
    """Padded tensors for one micro-batch (see the module doc)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    soft_positions: torch.Tensor
    labels: torch.Tensor
    loss_rounds: torch.Tensor
    events: torch.Tensor
    events_mask: torch.Tensor
    round_tasks: list[tuple[str, ...]]
    predict_starts: torch.Tensor  # [B, P]
    predict_events: torch.Tensor  # [B, P]
    position_ids: torch.Tensor | None = None
    attention_4d: torch.Tensor | None = None

    @property
    def n_rounds(self) -> int:
        return max((len(t) for t in self.round_tasks), default=0)

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        moved = {
            name: getattr(self, name).to(device)
            for name in (
                "input_ids",
                "attention_mask",
                "soft_positions",
                "labels",
                "loss_rounds",
                "events",
                "events_mask",
                "predict_starts",
                "predict_events",
            )
        }
        branched = {
            name: getattr(self, name).to(device)
            for name in ("position_ids", "attention_4d")
            if getattr(self, name) is not None
        }
        return Batch(**moved, **branched, round_tasks=self.round_tasks)


def _predictions(e: Example) -> list[tuple[int, int]]:
    """(position before the first answer token, history events seen) of each `predict` round;
    round k of an example with branches is branch k, which sees the trunk's first `sees` positions."""
    answer = np.asarray(e.tokens.answer_mask, dtype=bool)
    rounds = np.asarray(e.tokens.round_ids)
    out = []
    for r, task in enumerate(e.round_tasks):
        if task != PREDICT:
            continue
        positions = np.flatnonzero(answer & (rounds == r))
        if not positions.size:
            continue
        seen = e.branches[r].sees - e.tokens.soft_start if e.branches else len(e.events)
        out.append((int(positions[0]) - 1, int(seen)))
    return out


def padded_length(n: int, pad_to_multiple: int) -> int:
    """`n` rounded up to a multiple of `pad_to_multiple` (what `collate` pads a batch to)."""
    return -(-n // pad_to_multiple) * pad_to_multiple


def length_groups(lengths: Sequence[int], max_positions: int, overhead: int,
                  pad_to_multiple: int = 1) -> list[list[int]]:
    """Splits dialogues of `lengths` into micro-batches: consecutive runs of the longest-first
    order (ties by index) that minimise the padded positions plus `overhead` positions per
    micro-batch (its fixed cost), each at most `max_positions` padded positions (a longer
    dialogue goes alone). Returns the runs as lists of indices into `lengths`."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    padded = [padded_length(lengths[i], pad_to_multiple) for i in order]
    best = [0] + [None] * len(order)  # best[j]: cost of the first j dialogues of `order`
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(j - 1, -1, -1):  # the run order[i:j], padded to its first (longest)
            positions = (j - i) * padded[i]
            if positions > max_positions and i < j - 1:
                break
            cost = best[i] + positions + overhead
            if best[j] is None or cost < best[j]:
                best[j], cut[j] = cost, i
    runs, j = [], len(order)
    while j > 0:
        runs.append(order[cut[j]:j])
        j = cut[j]
    return runs[::-1]


def collate(examples: Sequence[Example], pad_id: int, pad_to_multiple: int = 1) -> Batch:
    """Right-pads `examples` into a `Batch`, to a length that is a multiple of `pad_to_multiple`
    (few distinct shapes: see `model.pad_to_multiple`); `pad_id` fills padding and soft positions."""
    if not examples:
        raise ValueError("cannot collate an empty batch")
    if pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    b = len(examples)
    s = padded_length(max(len(e) for e in examples), pad_to_multiple)
    length = max(1, max(len(e.events) for e in examples))
    input_ids = torch.full((b, s), pad_id, dtype=torch.long)
    attention = torch.zeros((b, s), dtype=torch.long)
    soft = torch.zeros((b, s), dtype=torch.bool)
    labels = torch.full((b, s), -100, dtype=torch.long)
    rounds = torch.full((b, s), -1, dtype=torch.long)
    events = torch.zeros((b, length, 4), dtype=torch.long)
    events_mask = torch.zeros((b, length), dtype=torch.bool)
    for i, e in enumerate(examples):
        t = e.tokens
        n = len(t)
        ids = torch.from_numpy(np.asarray(t.input_ids, dtype=np.int64))
        is_soft = ids == SOFT_TOKEN_ID
        answer = torch.from_numpy(np.asarray(t.answer_mask, dtype=bool))
        input_ids[i, :n] = torch.where(is_soft, torch.full_like(ids, pad_id), ids)
        attention[i, :n] = 1
        soft[i, :n] = is_soft
        labels[i, :n] = torch.where(answer, ids, torch.full_like(ids, -100))
        rounds[i, :n] = torch.where(
            answer, torch.from_numpy(np.asarray(t.round_ids, dtype=np.int64)), torch.full_like(ids, -1)
        )
        if len(e.events):
            ev = torch.from_numpy(np.asarray(e.events, dtype=np.int64))
            events[i, : len(ev)] = ev
            events_mask[i, : len(ev)] = True
    predictions = [_predictions(e) for e in examples]
    starts = torch.full((b, max(1, max(len(p) for p in predictions))), -1, dtype=torch.long)
    seen = torch.zeros_like(starts)
    for i, p in enumerate(predictions):
        for k, (pos, n_events) in enumerate(p):
            starts[i, k], seen[i, k] = pos, n_events
    position_ids = attention_4d = None
    if any(e.branches for e in examples):
        position_ids, attention_4d = _branch_layout(examples, s)
    return Batch(
        input_ids,
        attention,
        soft,
        labels,
        rounds,
        events,
        events_mask,
        [tuple(e.round_tasks) for e in examples],
        starts,
        seen,
        position_ids,
        attention_4d,
    )


def _branch_layout(examples: Sequence[Example], s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids [B, S] and the boolean mask [B, 1, S, S] of a batch with branches. Padding
    positions attend to position 0 only (their outputs are never read; no row is empty)."""
    positions = torch.zeros((len(examples), s), dtype=torch.long)
    mask = torch.zeros((len(examples), 1, s, s), dtype=torch.bool)
    mask[:, 0, :, 0] = True
    for i, e in enumerate(examples):
        n = len(e)
        trunk = e.branches[0].start if e.branches else n
        positions[i, :trunk] = torch.arange(trunk)
        mask[i, 0, :trunk, :trunk] = torch.ones(trunk, trunk, dtype=torch.bool).tril()
        for b in e.branches:
            length = b.end - b.start
            positions[i, b.start : b.end] = torch.arange(b.sees, b.sees + length)
            mask[i, 0, b.start : b.end, : b.sees] = True
            mask[i, 0, b.start : b.end, b.start : b.end] = torch.ones(length, length, dtype=torch.bool).tril()
    return positions, mask
