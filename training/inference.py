"""Inference on one KV sequence, as the on-device runtime decodes: text segments as token ids,
the soft slot as embedding rows, consecutive positions; then candidate scoring (summed: one
cache copy per candidate, all candidates in one batch; constrained: one copy per branch of the
candidates' token trie) or greedy generation up to the end of turn."""
from __future__ import annotations

import contextlib
import copy
import inspect
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from bua.dialogue import SCORING_RULES, Segment
from bua.training.data import single_token_id

if TYPE_CHECKING:  # pragma: no cover
    from bua.training.model import BUAModel


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """eval() + no_grad() for the duration, restoring the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def cache_keyword(lm: torch.nn.Module) -> str:
    """The keyword `lm`'s forward takes its KV cache by: `cache` in recent transformers,
    `past_key_values` before they renamed it (where `cache=` would be silently ignored)."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class InferenceSession:
    """One growing sequence with its KV cache (batch 1)."""

    def __init__(self, model: "BUAModel") -> None:
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache()
        self._cache_keyword = cache_keyword(model.lm)
        self.n_past = 0
        self.last_logits: torch.Tensor | None = None  # [V] float32 after the last fed position
        self._eot = single_token_id(model.tokenizer, model.chat.end_of_turn)

    def tokenize(self, text: str) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ feeding
    def _lm(self, cache, **inputs):
        """The LM forward over `inputs` after `cache` (a DynamicCache, extended in place)."""
        with evaluating(self.model):
            return self.model.lm(**inputs, **{self._cache_keyword: cache}, use_cache=True)

    def _run(self, embeds: torch.Tensor) -> None:
        out = self._lm(self.cache, inputs_embeds=embeds, logits_to_keep=1)
        self.n_past += embeds.shape[1]
        self.last_logits = out.logits[0, -1].float()

    def feed_ids(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        t = torch.tensor([list(ids)], dtype=torch.long, device=self.model.device)
        with torch.no_grad():
            self._run(self.model.lm.get_input_embeddings()(t))

    def feed_history(self, history) -> None:
        """The soft tokens of `history` (int64 [L, 4], a sequence of `bua.events.Event` or a
        `UserHistory`) as embedding rows."""
        from bua.events import history_array

        events = torch.as_tensor(history_array(history), device=self.model.device).unsqueeze(0)
        mask = torch.ones(events.shape[:2], dtype=torch.bool, device=self.model.device)
        with evaluating(self.model):
            soft, soft_mask = self.model.soft_tokenizer(events, mask)
            rows = soft[soft_mask].unsqueeze(0)
            dtype = self.model.lm.get_input_embeddings().weight.dtype
        if rows.shape[1]:
            self._run(rows.to(dtype))

    def feed_segments(self, segments: Sequence[Segment], history: np.ndarray | None = None) -> None:
        for seg in segments:
            if seg.kind == "soft":
                if history is None:
                    raise ValueError("the segments hold a soft slot but no history was given")
                self.feed_history(history)
            else:
                self.feed_ids(self.tokenize(seg.text))

    # ------------------------------------------------------------------ decoding
    def greedy(self, max_new_tokens: int) -> str:
        """Greedy tokens until the end of turn (fed back into the sequence) or the cap; returns
        the answer text without the end of turn."""
        if self.last_logits is None:
            raise ValueError("feed a prompt before generating")
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = int(torch.argmax(self.last_logits))
            self.feed_ids([token])
            if token == self._eot:
                break
            out.append(token)
        return self.model.tokenizer.decode(out)

    def score(self, candidates: Sequence[str], scoring: str = "constrained") -> torch.Tensor:
        """Log-probs [C] of each `candidate + end_of_turn` continuing the sequence, by a rule of
        `bua.dialogue.SCORING_RULES` (the runtime's `OnDevicePredictor(scoring=...)`)."""
        if scoring not in SCORING_RULES:
            raise ValueError(f"scoring must be one of {', '.join(SCORING_RULES)}, got {scoring!r}")
        if self.last_logits is None:
            raise ValueError("feed a prompt before scoring")
        if not candidates:
            raise ValueError("no candidates to score")
        seqs = [self.tokenize(c + self.model.chat.end_of_turn) for c in candidates]
        if scoring == "constrained":
            return self._score_constrained(seqs)
        c, k = len(seqs), max(len(s) for s in seqs)
        ids = torch.full((c, k), self.model.pad_id, dtype=torch.long, device=self.model.device)
        valid = torch.zeros((c, k), dtype=torch.bool, device=self.model.device)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            valid[i, : len(s)] = True
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(c)
        out = self._lm(cache, input_ids=ids)
        logp_next = torch.log_softmax(out.logits.float(), dim=-1)  # predicts token j+1
        first = torch.log_softmax(self.last_logits, dim=-1)[ids[:, 0]]
        rest = logp_next[:, :-1].gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        rest = torch.where(valid[:, 1:], rest, torch.zeros_like(rest))
        return first + rest.sum(dim=1)

    def _score_constrained(self, seqs: list[list[int]]) -> torch.Tensor:
        """`bua::Session::score_constrained`: each token's log-prob renormalized over the tokens
        that continue some candidate after the same prefix; only the branches are evaluated."""
        nexts: dict[tuple[int, ...], list[int]] = {}
        for s in seqs:
            for j, t in enumerate(s):
                tokens = nexts.setdefault(tuple(s[:j]), [])
                if t not in tokens:
                    tokens.append(t)
        if len(set(map(tuple, seqs))) < len(seqs):
            raise ValueError("two candidates are the same tokens")
        for c, s in enumerate(seqs):
            if tuple(s) in nexts:
                raise ValueError(f"candidate {c} is a prefix of another")
        branch_logp: dict[tuple[int, ...], torch.Tensor] = {}
        for prefix, tokens in nexts.items():
            if len(tokens) < 2:
                continue
            logits = self.last_logits
            if prefix:
                ids = torch.tensor([list(prefix)], dtype=torch.long, device=self.model.device)
                out = self._lm(copy.deepcopy(self.cache), input_ids=ids, logits_to_keep=1)
                logits = out.logits[0, -1].float()
            branch_logp[prefix] = torch.log_softmax(logits[tokens], dim=0)
        scores = torch.zeros(len(seqs), device=self.model.device)
        for c, s in enumerate(seqs):
            for j, t in enumerate(s):
                logp = branch_logp.get(tuple(s[:j]))
                if logp is not None:
                    scores[c] += logp[nexts[tuple(s[:j])].index(t)]
        return scores
