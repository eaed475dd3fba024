"""PromptEngine: one bundle's dialogue mechanics on one native llama.cpp session.

It turns the dialogue contract (`bua.dialogue`) into llama.cpp work: text segments become
token ids (cached), the soft slot becomes the projector's rows, the dialogue's opening stays in
the KV cache between calls, and every behavior name is scored as the final answer.
`OnDevicePredictor` drives it; tools (the benchmarks) use the same calls to time each step.
Not thread-safe: the predictor serializes calls with its lock.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Iterable, Sequence

import numpy as np

from bua.dialogue import (
    COUNTED_TASKS,
    EXPLAIN_ANSWER_END,
    EXPLAIN_FIRST_SECTION,
    EXPLAIN_LAST_SECTION,
    STAGE2_EXPLAIN_TASKS,
    SUMMARY,
    Segment,
    answer_suffix,
    round_prompt_segments,
)
from bua.events import Event
from bua.labels.facts import WINDOW_SECTIONS, behavior_counts, window_sections
from bua.labels.profile import RHYTHMS, trait_interests
from bua.runtime.bundle import Bundle
from bua.runtime.grammar import sections_grammar
from bua.vocab import name_pattern


@dataclass(frozen=True)
class Shortlist:
    """Candidate scores of `PromptEngine.shortlist_candidates` or `constrained_candidates`."""

    logprob: np.ndarray   # [n_behaviors]: exact where `scored`, else an upper bound
    scored: np.ndarray    # bool [n_behaviors]
    positions: int        # candidate tokens llama.cpp evaluated
    decodes: int          # llama_decode calls the scoring made (0: it shared the prompt's)

    @classmethod
    def from_native(cls, out: dict) -> Shortlist:
        """From the dict of `bua._native.Session.score_top_continuations` or `score_constrained`."""
        return cls(np.asarray(out["logprob"], dtype=np.float64), np.asarray(out["scored"], dtype=bool),
                   int(out["positions"]), int(out["decodes"]))

    def exact_logprob(self) -> np.ndarray:
        """The scored behaviors' log-probs, -inf for the others."""
        return np.where(self.scored, self.logprob, -np.inf)

    def probabilities(self) -> np.ndarray:
        """Softmax over the scored behaviors (0 for the others): each is at most
        1 + mass_tolerance times its softmax over all behaviors."""
        logp = self.exact_logprob()
        p = np.exp(logp - logp.max())
        return p / p.sum()


@dataclass(frozen=True)
class AnswerDecoding:
    """How the understanding rounds' greedy answers are decoded (OnDevicePredictor's
    parameters of the same names document each)."""

    dry_multiplier: float = 0.0
    dry_allowed_length: int = 2
    unique_clauses: bool = False
    start_with_first_section: bool = False
    end_after_last_section: bool = False
    grounded_names: bool = False
    grounded_counts: bool = False
    grounded_trait: bool = False
    grounded_facts: bool = False


class PromptEngine:
    """`session` is the native `bua._native.Session` it evaluates on; `opening` the token ids
    the KV cache holds before the soft slot (system prompt and the first user text up to the
    marker: the same for every task unless the template puts a task's question first), None before
    the first call; `candidates` the token ids of each behavior name plus the end of turn, in
    vocabulary order."""

    def __init__(self, bundle: Bundle, native: Any, model: Any, n_threads: int, n_ctx: int,
                 decoding: AnswerDecoding = AnswerDecoding()) -> None:
        self.bundle = bundle
        self.decoding = decoding
        self.template = bundle.dialogue_template
        self.chat = bundle.chat_format
        self.native = native
        self.model = model
        self.n_threads = n_threads
        self.session = self.new_session(n_ctx)
        self._tok_cache: dict[str, list[int]] = {}
        self._row_cache: dict[str, np.ndarray] = {}
        self.candidates = [self.tokens(name + self.chat.end_of_turn) for name in bundle.vocab.behaviors]
        self.suffix = self.tokens(answer_suffix(self.chat))
        self.opening: list[int] | None = None
        # Whoever evaluated what follows the opening in the KV cache (see `claim`); None after `start`.
        self.owner: object | None = None

    def new_session(self, n_ctx: int) -> Any:
        """A fresh native session on the same model and thread count."""
        return self.native.Session(self.model, n_ctx=n_ctx, n_threads=self.n_threads)

    def tokens(self, text: str) -> list[int]:
        """Token ids of a text segment (special tokens parsed, no BOS added), cached."""
        ids = self._tok_cache.get(text)
        if ids is None:
            ids = list(self.model.tokenize(text, add_special=False, parse_special=True))
            self._tok_cache[text] = ids
        return ids

    def eval_segments(self, segments: Sequence[Segment], soft: np.ndarray, score: bool = False) -> Shortlist | None:
        """Evaluates segments in order: a soft segment as `soft`'s rows, text as its tokens. The
        text right after the soft slot goes into the same llama_decode as the rows, as its
        token-embedding rows: one decode's fixed cost less per prompt. With `score`, also
        scores the behavior names as the answer after the segments (`constrained_candidates`),
        in the same decode as the final rows when the prompt ends in rows."""
        decodes: list[tuple[str, Any]] = []  # ("rows", float32 [n, n_embd]) or ("tokens", ids)
        pending = None  # soft rows waiting for the text that follows them
        for seg in segments:
            if seg.kind == "soft":
                pending = np.asarray(soft, dtype=np.float32)
            elif pending is not None:
                decodes.append(("rows", np.concatenate([pending, self.text_rows(seg.text)])))
                pending = None
            else:
                decodes.append(("tokens", self.tokens(seg.text)))
        if pending is not None:
            decodes.append(("rows", np.ascontiguousarray(pending)))
        fused = score and bool(decodes) and decodes[-1][0] == "rows"
        for kind, data in decodes[:-1] if fused else decodes:
            if kind == "rows":
                self.session.eval_embeddings(data)
            else:
                self.session.eval_tokens(data)
        if fused:
            return Shortlist.from_native(self.session.eval_and_score_constrained(decodes[-1][1], self.candidates))
        return self.constrained_candidates() if score else None

    def text_rows(self, text: str) -> np.ndarray:
        """`text`'s token-embedding rows (float32 [n_tokens, n_embd]), cached by text."""
        rows = self._row_cache.get(text)
        if rows is None:
            rows = self._row_cache[text] = np.asarray(self.model.token_embeddings(self.tokens(text)),
                                                      dtype=np.float32)
        return rows

    def keep_opening(self, opening: list[int]) -> int:
        """Leaves exactly `opening` in the KV cache, evaluating only what differs from the
        opening it held (their common token prefix stays); returns the positions kept."""
        cached = self.opening or []
        n = 0
        while n < min(len(cached), len(opening)) and cached[n] == opening[n]:
            n += 1
        if n:
            self.session.truncate(n)
        else:
            self.session.reset()
        if n < len(opening):
            self.session.eval_tokens(opening[n:])
        self.opening = list(opening)
        return n

    def start(self, first_task: str, soft: np.ndarray, context: dict[str, str] | None = None,
              score: bool = False) -> tuple[int, Shortlist | None]:
        """Positions the session right after the first round's prompt; returns the positions
        the KV cache kept from before (the opening's part it already held) and, with `score`,
        the behavior names scored as its answer (`eval_segments`)."""
        segs = round_prompt_segments(self.template, self.chat, first_task, True, 0, context)
        self.owner = None
        kept = self.keep_opening(self.tokens(segs[0].text))
        return kept, self.eval_segments(segs[1:], soft, score)

    def claim(self, owner: object) -> None:
        """Records that `owner` (e.g. a stream) evaluated what now follows the opening."""
        self.owner = owner

    def explain_rounds(self, soft: np.ndarray, tasks: Sequence[str], max_answer_tokens: int,
                       window: Sequence[Event] = ()) -> dict[str, str]:
        """Generates each task's answer in turn after a started first round; task -> answer.
        `window`: the events the soft rows encode (with `grounded_names`, their behaviors are the
        only names the answers may write; with `grounded_counts`, their counts are the counts the
        `COUNTED_TASKS` rounds write; with `grounded_facts`, the `WINDOW_SECTIONS` rounds are
        decoded under `sections_grammar` of what the window shows)."""
        d = self.decoding
        behaviors = behavior_counts(window)
        banned = self.absent_names(behaviors) if d.grounded_names else []
        names = self.bundle.vocab.behaviors
        counts = [(names[b], int(n)) for b, n in behaviors.items()] if d.grounded_counts else []
        answers: dict[str, str] = {}
        for k, task in enumerate(tasks):
            if k > 0:
                self.eval_segments(round_prompt_segments(self.template, self.chat, task, False, k), soft)
            trait = d.grounded_trait and task == SUMMARY
            # with the window's facts, the grammar holds the layout, names and counts and repeats
            # no item (the summary's after its trait, which no window shows)
            facts = d.grounded_facts and bool(window) and task in WINDOW_SECTIONS and (trait or task != SUMMARY)
            opening = EXPLAIN_FIRST_SECTION.get(task, "") if trait or (d.start_with_first_section and not facts) else ""
            if opening:
                self.session.eval_tokens(self.tokens(opening))
            if trait:  # "Trait: <interest> <rhythm>.": the model's pick among the traits the labels write
                opening += self.choose(f" {i} {r}." for i in trait_interests(self.bundle.vocab, behaviors)
                                       for r in RHYTHMS)
            if facts:
                grammar = sections_grammar(window_sections(task, window, self.bundle.vocab), " " if trait else "")
                out = self.session.generate(max_answer_tokens, [EXPLAIN_ANSWER_END], dry_multiplier=d.dry_multiplier,
                                            dry_allowed_length=d.dry_allowed_length, grammar=grammar)
            else:
                # a model that writes a newline instead of ending the turn starts the answer over
                end_after = EXPLAIN_LAST_SECTION.get(task, "") if d.end_after_last_section else ""
                out = self.session.generate(max_answer_tokens, [EXPLAIN_ANSWER_END],
                                            dry_multiplier=d.dry_multiplier, dry_allowed_length=d.dry_allowed_length,
                                            unique_clauses=d.unique_clauses, banned_phrases=banned, end_after=end_after,
                                            counts=counts if task in COUNTED_TASKS else [])
            answers[task] = (opening + out["text"]).strip()
            self.session.eval_tokens(self.suffix)
        return answers

    def choose(self, phrases: Iterable[str]) -> str:
        """Evaluates and returns the likeliest of `phrases` here when the text must be one of them
        (`bua::Session::score_constrained`). A phrase whose tokens begin another's is left out
        (constrained scoring needs a prefix-free set; phrases that end alike rarely lose one)."""
        ids = {p: tuple(self.tokens(p)) for p in phrases}
        phrases = [p for p, t in ids.items()
                   if not any(len(u) > len(t) and u[:len(t)] == t for u in ids.values())]
        phrases = list({ids[p]: p for p in phrases}.values())  # one phrase per token sequence
        scores = self.session.score_constrained([list(ids[p]) for p in phrases])
        best = phrases[int(np.argmax(scores["logprob"]))]
        self.session.eval_tokens(self.tokens(best))
        return best

    def absent_names(self, behaviors: Collection[int]) -> list[str]:
        """The behavior names not in `behaviors`, less any that occurs as whole words inside a
        name that is (banning it would ban that name too)."""
        names = self.bundle.vocab.behaviors
        ids = set(behaviors)
        present = [names[b].lower() for b in ids]
        return [n for i, n in enumerate(names)
                if i not in ids and not any(name_pattern(n).search(p) for p in present)]

    def begin(self, final_task: str, soft: np.ndarray, explain: bool, context: dict[str, str] | None,
              max_answer_tokens: int, score: bool = False,
              window: Sequence[Event] = ()) -> tuple[dict[str, str], Shortlist | None]:
        """Evaluates everything before the final round's answer (with `explain`, the
        understanding rounds first, `explain_rounds`); returns their answers and, with `score`,
        the behavior names scored as the final answer (`eval_segments`)."""
        if not explain:
            return {}, self.start(final_task, soft, context, score)[1]
        self.start(STAGE2_EXPLAIN_TASKS[0], soft)
        answers = self.explain_rounds(soft, STAGE2_EXPLAIN_TASKS, max_answer_tokens, window)
        final = round_prompt_segments(self.template, self.chat, final_task, False, len(STAGE2_EXPLAIN_TASKS),
                                      context)
        return answers, self.eval_segments(final, soft, score)

    def score_candidates(self) -> np.ndarray:
        """log P(name + end of turn | the evaluated prompt) for every behavior id."""
        return np.asarray(self.session.score_continuations(self.candidates), dtype=np.float64)

    def constrained_candidates(self) -> Shortlist:
        """Every behavior's log-prob when the answer must be a behavior name: renormalized at
        each branch of the names' token trie, so only the branches are evaluated
        (`bua::Session::score_constrained`)."""
        return Shortlist.from_native(self.session.score_constrained(self.candidates))

    def shortlist_candidates(self, top_k: int, mass_tolerance: float) -> Shortlist:
        """The best `top_k` behaviors' log-probs exactly, the others exactly or bounded from
        above so that their mass is at most `mass_tolerance` of the scored mass
        (`bua::Session::score_top_continuations`)."""
        return Shortlist.from_native(self.session.score_top_continuations(self.candidates, top_k=top_k,
                                                                          mass_tolerance=mass_tolerance))

    @property
    def n_past(self) -> int:
        return self.session.n_past
