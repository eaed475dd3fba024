"""What the native side of comparisons 2-4 runs, on `bua._native` sessions.

- `TextPromptPredictor`: the TALLRec-style baseline: the same prediction prompt with the
  history written as event lines, same candidate scoring, same head-of-prompt KV reuse as
  `OnDevicePredictor`'s fast path.
- `DialogueRunner`: a multi-round dialogue (comparison 3) evaluated with KV reuse or from
  scratch every round, and candidate scoring (comparison 4) with a shared prompt or one full
  evaluation per candidate. Token ids and soft rows are prepared before timing (identical
  on both sides); answers are decoded one token per llama_decode, as generation does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from benchkit.workloads import Round, text_prompt_parts
from bua.runtime.engine import Shortlist


def new_session(predictor, n_ctx: int = 4096):
    """A fresh native session on the predictor's model, with its thread count."""
    return predictor.engine.new_session(n_ctx)


def softmax_top(logp: np.ndarray, behaviors: Sequence[str], k: int = 5) -> list[str]:
    order = np.argsort(-np.asarray(logp), kind="stable")[:k]
    return [behaviors[i] for i in order]


class TextPromptPredictor:
    """Prediction from a text-history prompt on the predictor's GGUF (no encoder, no soft rows)."""

    def __init__(self, predictor) -> None:
        self.p = predictor
        self.session = new_session(predictor)
        self.head: list[int] | None = None
        self.last_prompt_tokens = 0

    def prompt_tokens(self, events) -> tuple[list[int], list[int]]:
        head, rest = text_prompt_parts(self.p.template, self.p.chat, events, self.p.vocab)
        return self.p.engine.tokens(head), list(self.p.model.tokenize(rest, add_special=False, parse_special=True))

    def eval_prompt(self, head: list[int], rest: list[int]) -> None:
        """Evaluate head + rest, keeping the KV of a head that did not change since last call
        (the fixed instructions before the history, as the fast path keeps its head)."""
        if self.head == head:
            self.session.truncate(len(head))
        else:
            self.session.reset()
            self.session.eval_tokens(head)
            self.head = head
        self.session.eval_tokens(rest)
        self.last_prompt_tokens = self.session.n_past

    def logprobs(self, events) -> np.ndarray:
        """The candidates' log-probs as the predictor's fast path scores them (top 5 exact, -inf
        for the behaviors its shortlist left out)."""
        self.eval_prompt(*self.prompt_tokens(events))
        return self._score().exact_logprob()

    def _score(self) -> Shortlist:
        return Shortlist.from_native(self.session.score_top_continuations(
            self.p.engine.candidates, top_k=5, mass_tolerance=self.p.score_tolerance))

    def top(self, events, k: int = 5) -> list[str]:
        return softmax_top(self.logprobs(events), self.p.vocab.behaviors, k)

    def breakdown(self, events, repeats: int) -> dict[str, float]:
        """Median ms of tokenizing, the llama.cpp prompt and candidate scoring."""
        parts: dict[str, list[float]] = {"tokenize_ms": [], "prompt_ms": [], "scoring_ms": []}
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            head, rest = self.prompt_tokens(events)
            t1 = time.perf_counter()
            self.eval_prompt(head, rest)
            t2 = time.perf_counter()
            self._score()
            t3 = time.perf_counter()
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[key].append(1e3 * dt)
        return {k: float(np.median(v)) for k, v in parts.items()}


def fastpath_breakdown(predictor, events, repeats: int) -> dict[str, float]:
    """Where one fast-path prediction spends its time (median ms over `repeats`): the ONNX
    encoder, then the llama.cpp work as `predict` does it for the predictor's `scoring`:
    constrained, the prompt and the names' branch tokens in one decode
    (`prompt_and_scoring_ms`); summed, the prompt, then the top-5 shortlist (`prompt_ms`,
    `scoring_ms`). Also the positions evaluated."""
    from bua.dialogue import PREDICT

    engine = predictor.engine
    constrained = predictor.scoring == "constrained"
    keys = ("onnx_ms", "prompt_and_scoring_ms") if constrained else ("onnx_ms", "prompt_ms", "scoring_ms")
    parts: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        soft = predictor.soft_tokens(events)
        t1 = time.perf_counter()
        scores = engine.start(PREDICT, soft, score=constrained)[1]
        t2 = time.perf_counter()
        if not constrained:
            scores = engine.shortlist_candidates(5, predictor.score_tolerance)
        t3 = time.perf_counter()
        times = (t1 - t0, t3 - t1) if constrained else (t1 - t0, t2 - t1, t3 - t2)
        for key, dt in zip(keys, times):
            parts[key].append(1e3 * dt)
    out = {k: float(np.median(v)) for k, v in parts.items()}
    out["prompt_positions"] = engine.n_past
    out["head_positions_cached"] = len(engine.opening)
    out["candidate_positions"] = scores.positions
    return out


@dataclass
class Piece:
    """Part of a prompt: token ids or soft rows."""

    tokens: list[int] | None = None
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tokens) if self.tokens is not None else len(self.rows)


def _merge(pieces: list[Piece]) -> list[Piece]:
    """Consecutive token pieces joined into one (one llama_decode call instead of several)."""
    out: list[Piece] = []
    for p in pieces:
        if p.tokens is not None and out and out[-1].tokens is not None:
            out[-1] = Piece(tokens=out[-1].tokens + p.tokens)
        else:
            out.append(p)
    return out


@dataclass
class Counts:
    prefill_positions: int = 0   # evaluated in batches
    decoded_tokens: int = 0      # evaluated one token per llama_decode (generation)
    llama_calls: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"prefill": 0.0, "decode": 0.0, "scoring": 0.0})


class DialogueRunner:
    """One dialogue's inputs, prepared once, and the ways to evaluate it."""

    def __init__(self, predictor, session, rounds: Sequence[Round], soft: np.ndarray) -> None:
        self.session = session
        self.candidates = predictor.engine.candidates
        self.suffix = predictor.engine.suffix
        self.prompts: list[list[Piece]] = []
        self.answers: list[list[int] | None] = []
        for r in rounds:
            pieces = [Piece(rows=soft) if s.kind == "soft" else Piece(tokens=predictor.engine.tokens(s.text))
                      for s in r.prompt]
            self.prompts.append(pieces)
            self.answers.append(None if r.answer is None else list(predictor.model.tokenize(r.answer, False, True)))

    # ------------------------------------------------------------------ primitives
    def _feed(self, pieces: Sequence[Piece], c: Counts) -> None:
        t0 = time.perf_counter()
        for p in pieces:
            if p.tokens is not None:
                self.session.eval_tokens(p.tokens)
            else:
                self.session.eval_embeddings(p.rows)
            c.prefill_positions += len(p)
            c.llama_calls += 1
        c.seconds["prefill"] += time.perf_counter() - t0

    def _decode(self, tokens: Sequence[int], c: Counts) -> None:
        t0 = time.perf_counter()
        for t in tokens:
            self.session.eval_tokens([t])
        c.decoded_tokens += len(tokens)
        c.llama_calls += len(tokens)
        c.seconds["decode"] += time.perf_counter() - t0

    def _score(self, candidates, c: Counts) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.asarray(self.session.score_continuations(candidates), dtype=np.float64)
        c.seconds["scoring"] += time.perf_counter() - t0
        c.llama_calls += 1
        return out

    # ------------------------------------------------------------------ comparison 3
    def dialogue_kv_reuse(self) -> tuple[np.ndarray, Counts]:
        """Each round evaluates only its own prompt; answers stay in the KV cache."""
        c = Counts()
        self.session.reset()
        for prompt, answer in zip(self.prompts, self.answers):
            self._feed(prompt, c)
            if answer is None:
                return self._score(self.candidates, c), c
            self._decode(answer, c)
            self._feed([Piece(tokens=self.suffix)], c)
        raise AssertionError("the dialogue has no final round")

    def dialogue_reevaluate(self) -> tuple[np.ndarray, Counts]:
        """Each round re-evaluates the whole conversation so far (a stateless chat call),
        then decodes its answer."""
        c = Counts()
        history: list[Piece] = []
        for prompt, answer in zip(self.prompts, self.answers):
            history = history + list(prompt)
            self.session.reset()
            self._feed(_merge(history), c)
            if answer is None:
                return self._score(self.candidates, c), c
            self._decode(answer, c)
            history = history + [Piece(tokens=answer + self.suffix)]
        raise AssertionError("the dialogue has no final round")

    # ------------------------------------------------------------------ comparison 4
    def scoring_shared(self) -> tuple[np.ndarray, Counts]:
        """The first-round prediction prompt once, then every candidate on copies of its KV."""
        c = Counts()
        self.session.reset()
        self._feed(self.prompts[0], c)
        return self._score(self.candidates, c), c

    def scoring_per_candidate(self) -> tuple[np.ndarray, Counts]:
        """The whole prompt evaluated again for every candidate."""
        c = Counts()
        out = np.empty(len(self.candidates))
        for i, cand in enumerate(self.candidates):
            self.session.reset()
            self._feed(self.prompts[0], c)
            out[i] = self._score([cand], c)[0]
        return out, c
