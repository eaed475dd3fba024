"""Encoder distillation at the prediction round (stage 2, a bua extension).

The behavior encoder's next-behavior head gives a full distribution over the candidates for
every history; the observed next behavior is one noisy draw from it. `distill_weight` adds, per
prediction (each branch of a `prefix_predictions` example is one, with its own history prefix),
the KL divergence from that distribution to the LLM's distribution over the candidates' first
answer tokens (candidates that share a first token pool their teacher mass), averaged over the
dialogue's predictions. With `distill_prior_adjustment` tau, the student's logits inside the KL
are shifted by tau x log(prior) (logit adjustment, Menon et al. 2021): the logits the runtime
scores then fit teacher / prior^tau, which ranks rare behaviors higher. The first answer token
is where candidate scoring (`InferenceSession.score`) makes its decision for most names, and its
logits come out of the forward pass the dialogue loss already runs, so the term costs one small
matmul per prediction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FirstTokens:
    """The distinct first tokens of the candidate answers and which candidate starts with which."""

    ids: torch.Tensor  # int64 [G]: token ids, in order of first appearance
    groups: torch.Tensor  # float32 [n_candidates, G]: 1 where candidate c starts with ids[g]

    @classmethod
    def build(cls, tokenize, candidates: Sequence[str]) -> "FirstTokens":
        """`tokenize(text) -> list[int]` as the answers are tokenized (`InferenceSession.tokenize`)."""
        firsts = []
        for c in candidates:
            ids = tokenize(c)
            if not ids:
                raise ValueError(f"candidate {c!r} tokenizes to nothing")
            firsts.append(int(ids[0]))
        distinct = list(dict.fromkeys(firsts))
        groups = torch.zeros(len(candidates), len(distinct))
        for c, first in enumerate(firsts):
            groups[c, distinct.index(first)] = 1.0
        return cls(torch.tensor(distinct, dtype=torch.long), groups)

    def pool(self, dist: torch.Tensor) -> torch.Tensor:
        """[..., n_candidates] -> [..., G]: each first token's summed mass."""
        return dist @ self.groups.to(dist)

    def to(self, device: torch.device | str) -> "FirstTokens":
        return FirstTokens(self.ids.to(device), self.groups.to(device))


@torch.no_grad()
def teacher_distribution(encoder, events: torch.Tensor, mask: torch.Tensor, seen: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """[B, P, n_behaviors] the encoder's next-behavior distribution after the first `seen[b, p]`
    events of row b (the encoder is causal: one pass serves every prefix)."""
    logits = encoder(events, mask)["behavior"].float()
    rows = torch.arange(len(seen), device=seen.device).unsqueeze(1)
    return torch.softmax(logits[rows, (seen - 1).clamp(min=0)] / temperature, dim=-1)


def first_token_log_prior(first: FirstTokens, counts: Sequence[float], tau: float) -> torch.Tensor:
    """[G] tau x log of each first token's share of `counts` (occurrences of each candidate, +1
    each so that no behavior has probability 0)."""
    counts_t = torch.as_tensor(list(counts), dtype=torch.float32) + 1.0
    if counts_t.shape != (first.groups.shape[0],):
        raise ValueError(f"{counts_t.numel()} behavior counts for {first.groups.shape[0]} candidates")
    prior = first.pool(counts_t / counts_t.sum())
    return (tau * prior.log()).to(first.ids.device)


def distillation_loss(student_logits: torch.Tensor, teacher: torch.Tensor, first: FirstTokens,
                      log_prior: torch.Tensor | None = None) -> torch.Tensor:
    """[...] KL(teacher pooled by first token || softmax(student_logits + log_prior));
    `student_logits` [..., G] are the LLM's logits of `first.ids` at the first answer token,
    `teacher` [..., n_candidates], `log_prior` [G] (`first_token_log_prior`) or None."""
    target = first.pool(teacher)
    logits = student_logits.float()
    log_q = F.log_softmax(logits if log_prior is None else logits + log_prior, dim=-1)
    return (target * (torch.log(target.clamp(min=1e-12)) - log_q)).sum(dim=-1)


def teacher_agreement(student_logits: torch.Tensor, teacher: torch.Tensor, first: FirstTokens) -> torch.Tensor:
    """[...] bool: the LLM's most likely first answer token is the first token of the teacher's
    most likely first-token group (how often the student copies the teacher's top-1 where
    candidate scoring makes its decision). Shapes as in `distillation_loss`."""
    return student_logits.float().argmax(dim=-1) == first.pool(teacher).argmax(dim=-1)
