"""Dialogue losses: token-level (Eq. 3) and round-balanced (Eq. 5), per dialogue.

Inputs are aligned with the LM's logits after the usual shift: `token_nll[b, s]` is the
negative log-likelihood of token s+1 of dialogue b, and `round_ids[b, s]` that token's answer
round (-1 outside answers).

- token (Eq. 3): a dialogue's loss is the mean over all its answer tokens, so long rounds
  dominate (Eq. 4).
- round_balanced (Eq. 5): each round's mean token loss, averaged over the dialogue's rounds;
  every round counts the same whatever its length (the weight W_i of sec. 3.4).

Optional per-round weights (App. J task weighting) multiply each round's contribution, and
optional per-token weights (`end_of_turn_weights`) a token's share of its round's sum; with all
weights 1 both modes are exactly the equations above.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_MODES = ("round_balanced", "token")


@dataclass
class RoundLosses:
    """Per-dialogue, per-round statistics of one batch (detached where noted)."""

    sums: torch.Tensor  # [B, R] summed token NLL per round (graph attached)
    counts: torch.Tensor  # [B, R] answer tokens per round

    @property
    def means(self) -> torch.Tensor:
        """[B, R] mean token NLL per round (0 where a round is absent)."""
        return self.sums / self.counts.clamp(min=1)

    @property
    def present(self) -> torch.Tensor:
        return self.counts > 0


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Shifted per-token NLL in float32: `[B, S-1]`, 0 where labels[:, 1:] == -100."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
        ignore_index=-100, reduction="none",
    )
    return nll.view(shift_labels.shape)


def end_of_turn_weights(labels: torch.Tensor, end_of_turn_id: int, weight: float) -> torch.Tensor:
    """[B, S-1] token weights aligned with `token_nll(logits, labels)`: `weight` where the
    predicted token is the end of a turn, 1 elsewhere."""
    return torch.where(labels[:, 1:] == end_of_turn_id, weight, 1.0).to(torch.float32)


def round_losses(nll: torch.Tensor, round_ids: torch.Tensor, n_rounds: int,
                 token_weights: torch.Tensor | None = None) -> RoundLosses:
    """Sums and counts of `nll` [B, S'] per round; `round_ids` [B, S'] (-1 = not an answer token).
    `token_weights` [B, S'] multiply each token's NLL in the sums; the counts stay token counts,
    so a round's mean is its weighted sum over its length."""
    if nll.shape != round_ids.shape:
        raise ValueError(f"nll {tuple(nll.shape)} and round_ids {tuple(round_ids.shape)} differ in shape")
    if token_weights is not None:
        if token_weights.shape != nll.shape:
            raise ValueError(f"token_weights {tuple(token_weights.shape)} and nll {tuple(nll.shape)} differ in shape")
        nll = nll * token_weights.to(nll)
    b = nll.shape[0]
    valid = round_ids >= 0
    idx = torch.where(valid, round_ids, torch.zeros_like(round_ids))
    sums = torch.zeros(b, n_rounds, dtype=nll.dtype, device=nll.device)
    sums = sums.scatter_add(1, idx, torch.where(valid, nll, torch.zeros_like(nll)))
    counts = torch.zeros(b, n_rounds, dtype=nll.dtype, device=nll.device)
    counts = counts.scatter_add(1, idx, valid.to(nll.dtype))
    return RoundLosses(sums=sums, counts=counts)


def dialogue_losses(rounds: RoundLosses, mode: str, round_weights: torch.Tensor | None = None) -> torch.Tensor:
    """[B] per-dialogue losses under `mode` ("round_balanced" or "token").

    `round_weights` [B, R] scales each round (App. J); None means 1 everywhere. Dialogues
    without answer tokens get 0.
    """
    if mode not in LOSS_MODES:
        raise ValueError(f"unknown loss mode {mode!r}; valid modes: {', '.join(LOSS_MODES)}")
    weights = torch.ones_like(rounds.sums) if round_weights is None else round_weights.to(rounds.sums)
    present = rounds.present
    if mode == "token":
        total = rounds.counts.sum(dim=1)
        return (weights * rounds.sums).sum(dim=1) / total.clamp(min=1)
    n_present = present.sum(dim=1).to(rounds.sums.dtype)
    per_round = torch.where(present, weights * rounds.means, torch.zeros_like(rounds.sums))
    return per_round.sum(dim=1) / n_present.clamp(min=1)
