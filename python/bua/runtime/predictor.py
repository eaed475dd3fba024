"""OnDevicePredictor: BUA on a phone or edge box (numpy + onnxruntime + llama.cpp, no torch).

    predictor = OnDevicePredictor.from_bundle("bundle/", n_threads=2)
    result = predictor.predict(history, top_k=5, explain=True)
    day = predictor.generate(history, horizon="1d")

The encoder + projector run in onnxruntime and give one row per soft token; the native
session (bua._native, C++ over llama.cpp) decodes the dialogue's text segments and those rows
on one sequence, keeping the KV cache across rounds, and scores every behavior name as the
final answer on the shared prompt state.
"""
from __future__ import annotations

import numbers
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bua.dialogue import GENERATE, PREDICT, SCORING_RULES, answer_prefix, question_context, round_prompt_segments
from bua.events import DataError, Event, UserHistory, events_from_array, events_to_batch, validate_events
from bua.runtime.bundle import Bundle
from bua.runtime.engine import AnswerDecoding, PromptEngine, Shortlist
from bua.runtime.grammar import day_end_stops, event_lines_grammar
from bua.runtime.native import check_llama_build, load_native
from bua.textformat import parse_events, parse_events_report

HISTORY_SOURCE = "history"
# `generate`'s default decoding of a day: the model's own temperature, so the clock moves at the
# pace it learned (at 0.7 the times creep and lines loop), and min-p 0.02 against the rare tokens
# that start a name the vocabulary lacks (training/README.md, "Twenty-ninth round")
GENERATION_TEMPERATURE = 1.0
GENERATION_TOP_P = 0.95
GENERATION_MIN_P = 0.02


class GenerationError(RuntimeError):
    """The model's generated events did not parse, even with grammar-constrained retries."""

    def __init__(self, message: str, attempts: Sequence[str] = ()):
        super().__init__(message)
        self.attempts = list(attempts)  # each attempt's text, the unconstrained one first


@dataclass(frozen=True)
class BehaviorScore:
    behavior: str
    behavior_id: int
    # softmax of `logprob` over the behaviors scored exactly: with constrained scoring every
    # behavior, so exact; with summed scoring at most a factor 1 + score_tolerance above the
    # softmax over all behaviors (OnDevicePredictor)
    probability: float
    logprob: float       # log P(name + end of turn | prompt) under the LLM (constrained or summed)


@dataclass(frozen=True)
class Prediction:
    top: list[BehaviorScore]
    explanation: dict[str, str] = field(default_factory=dict)  # task -> the round's answer
    prompt_tokens: int = 0            # positions evaluated before the final answer
    soft_tokens: int = 0
    scored_behaviors: int = 0         # behaviors scored exactly; the others could not reach the top k

    @property
    def behavior(self) -> str:
        return self.top[0].behavior


@dataclass(frozen=True)
class GeneratedDay:
    events: list[Event]
    text: str
    explanation: dict[str, str] = field(default_factory=dict)
    constrained: bool = False         # True when the grammar-constrained retry produced it
    skipped_lines: int = 0            # constrained retry: repeated or out-of-order lines dropped
    free_text: str = ""               # the first, unconstrained attempt (= text unless constrained)


def default_threads() -> int:
    """Cores this process may use, at most 4 (ggml spin-waits: never exceed free cores)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


HISTORY_KINDS = ("pass a list of bua.events.Event, a UserHistory, an int array [L, 4] or event text "
                 "lines ('Mon 08:10 @home check weather')")
MAX_CONTEXT = 1 << 20
ORT_ALLOW_SPINNING = "session.intra_op.allow_spinning"  # onnxruntime's session config key


def encoder_session(path: str | os.PathLike, n_threads: int):
    """The bundle's encoder on onnxruntime's CPU provider, sharing the cores with llama.cpp.

    onnxruntime's intra-op workers spin for a while after each run by default; the llama.cpp
    decode that follows every encoder run would share its cores with a spinning thread
    (docs/ON_DEVICE.md has the cost), so they sleep instead."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry(ORT_ALLOW_SPINNING, "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_top_k(top_k) -> None:
    if not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a whole number of at least 1, got {top_k!r}")


def _check_count(name: str, value, low: int, high: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")


class OnDevicePredictor:
    """Multi-round BUA prediction and generation from an exported bundle.

    Thread-safe: calls are serialized on the one llama.cpp context (a lock), so one predictor
    shared by several threads gives the same results as sequential use. `dry_multiplier` and
    `dry_allowed_length` set llama.cpp's DRY penalty on verbatim repeats within an
    understanding round's greedy answer: a token that would extend a repeat longer than
    `dry_allowed_length` tokens loses `dry_multiplier * 1.75 ** (run - dry_allowed_length)`
    logits (0 = plain greedy). With `unique_clauses`, no clause of a round's answer (the text
    between , ; : . ! ? and a space; numbers and brackets ignored) repeats an earlier one:
    decoding takes the clause back and bans its first token there (at most 3 times, then the
    answer ends before it). With `start_with_first_section`, the runtime writes an answer's
    first section header (`bua.dialogue.EXPLAIN_FIRST_SECTION`, e.g. "Frequent:") and the model
    goes on from there; with `end_after_last_section`, an answer ends with the sentence after
    its last section's header (`bua.dialogue.EXPLAIN_LAST_SECTION`). Both follow the layout of
    the computed labels: turn them off for a curriculum whose teacher rephrased them. With
    `grounded_names`, the rounds name only behaviors of the history they explain: a behavior
    name the history lacks is taken back the same way. With `grounded_counts`, a count the
    key-behaviors round writes after a behavior name ("gaming (3)") is the behavior's number of
    events in the history: the runtime writes the number, the model goes on after it (a 135M
    model names the frequent behaviors but rarely counts them right; training/README.md). With
    `grounded_trait`, the summary's "Trait:" is the one the model finds likeliest among those
    the labels can write for the history (`bua.labels.profile.trait_interests` x `RHYTHMS`);
    the model writes the rest (a 135M model's free trait invents ages and disorders). With
    `grounded_facts`, the key-behaviors and patterns rounds, and the summary after its trait,
    are decoded under a grammar of what the history shows (`bua.labels.facts.window_sections`:
    its frequent behaviors with their counts, its changes of place, repeated runs, regular
    times, each place's most frequent behavior, habits and anchors): the model chooses which of
    these to state and in what order, and states no other (a 135M model's free rounds name
    behaviors and places the history lacks). The
    fast path's (`explain=False`) behavior scores never depend on these.

    A generated day has rules of its own. With `stop_at_day_end`, it ends before a line of
    another day or a time past 23:59. With `unique_lines`, no line repeats an earlier one: a
    repeat is taken back from its first token, which is banned there (at most 3 times, then the
    day ends before it); off by default, since a looping model's day then ends where its loop
    begins, hours before the real day does (training/README.md, "Twenty-fifth round").

    `scoring` says how a behavior name is scored as the answer. "constrained" (the default):
    the answer must be a behavior name, so at each branch of the names' token trie the
    next-token distribution is renormalized over the tokens that continue some name; only the
    branches are evaluated, and the probabilities are exact and sum to 1. "summed": the name's
    log-probabilities under the unconstrained model, summed over its tokens and the end of turn;
    `score_tolerance` then sets how much of the behaviors' mass `predict` and streams may leave
    unscored: behaviors are scored best first (a name is at most as likely as its first token)
    until the others can neither enter the top k nor hold more than this share of the scored
    mass. The top k are always exact and in order; each reported probability is at most a
    factor 1 + score_tolerance too high; 0 scores every behavior. `behavior_logprobs` always
    scores every behavior.
    """

    def __init__(self, bundle: Bundle, n_threads: int | None = None, n_ctx: int = 4096,
                 max_answer_tokens: int = 192, max_generation_tokens: int = 640, dry_multiplier: float = 3.0,
                 dry_allowed_length: int = 1, unique_clauses: bool = True, start_with_first_section: bool = True,
                 end_after_last_section: bool = True, grounded_names: bool = True, grounded_counts: bool = True,
                 grounded_trait: bool = True, grounded_facts: bool = True, stop_at_day_end: bool = True,
                 unique_lines: bool = False,
                 score_tolerance: float = 1e-2, scoring: str = "constrained"):
        if n_threads is not None:
            _check_count("n_threads", n_threads, 1, 512)
        _check_count("n_ctx", n_ctx, 64, MAX_CONTEXT)
        _check_count("max_answer_tokens", max_answer_tokens, 1, MAX_CONTEXT)
        _check_count("max_generation_tokens", max_generation_tokens, 1, MAX_CONTEXT)
        if not 0.0 <= dry_multiplier <= 10.0:
            raise ValueError(f"dry_multiplier must lie in [0, 10] (0 = off), got {dry_multiplier!r}")
        _check_count("dry_allowed_length", dry_allowed_length, 1, MAX_CONTEXT)
        if not (isinstance(score_tolerance, numbers.Real) and 0.0 <= score_tolerance <= 1.0):
            raise ValueError(f"score_tolerance must lie in [0, 1] (0 = score every behavior), got {score_tolerance!r}")
        self.score_tolerance = float(score_tolerance)
        if scoring not in SCORING_RULES:
            raise ValueError(f"scoring must be one of {', '.join(SCORING_RULES)}, got {scoring!r}")
        self.scoring = scoring
        self.bundle = bundle
        self.vocab = bundle.vocab
        self.chat = bundle.chat_format
        self.template = bundle.dialogue_template
        self.n_threads = n_threads or default_threads()
        self.max_answer_tokens = max_answer_tokens
        self.max_generation_tokens = max_generation_tokens
        self.unique_lines = bool(unique_lines)
        self.stop_at_day_end = bool(stop_at_day_end)

        self._encoder = encoder_session(bundle.encoder_path, self.n_threads)
        native = load_native()
        check_llama_build(native)
        self.model = native.Model.load(str(bundle.gguf_path))
        if self.model.n_embd != bundle.n_embd:
            raise ValueError(f"bundle {bundle.path}: the GGUF's n_embd is {self.model.n_embd} but the "
                             f"manifest's projector width is {bundle.n_embd}")
        # The dialogue's opening (system prompt, first user prefix) never changes: the engine
        # keeps it in the KV cache between calls and re-evaluates only what follows it.
        self.engine = PromptEngine(bundle, native, self.model, self.n_threads, n_ctx,
                                   AnswerDecoding(dry_multiplier, dry_allowed_length, bool(unique_clauses),
                                                  bool(start_with_first_section), bool(end_after_last_section),
                                                  bool(grounded_names), bool(grounded_counts),
                                                  bool(grounded_trait), bool(grounded_facts)))
        self._lock = threading.Lock()
        self._stream_rows = 0  # soft rows the engine's owning stream has after the opening (see stream())

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, n_threads: int | None = None, *,
                    verify: bool = True, **kwargs) -> "OnDevicePredictor":
        """Loads a bundle written by `bua-export`: checks the manifest and every file's
        sha256 (unless verify=False), then opens the ONNX encoder and the GGUF."""
        return cls(Bundle.load(Path(path), verify=verify), n_threads=n_threads, **kwargs)

    # ------------------------------------------------------------------ inputs
    def _events(self, history) -> list[Event]:
        if isinstance(history, UserHistory):
            events = list(history.events)
        elif isinstance(history, str):
            events = parse_events(history, self.vocab, source=HISTORY_SOURCE)
        elif isinstance(history, (bytes, bytearray)):
            raise TypeError("history is bytes: decode it to text first (history.decode('utf-8')), "
                            "or pass a list of bua.events.Event")
        elif isinstance(history, np.ndarray):
            events = events_from_array(history)
        elif history is None or not hasattr(history, "__iter__"):
            raise TypeError(f"history is {'None' if history is None else 'a ' + type(history).__name__}: "
                            f"{HISTORY_KINDS}")
        else:
            events = list(history)
        if not events:
            raise ValueError("history is empty: prediction needs at least one event")
        if len(events) > self.bundle.max_history:
            raise ValueError(f"history has {len(events)} events but this bundle supports at most "
                             f"{self.bundle.max_history}; pass the most recent "
                             f"{self.bundle.max_history} (history[-{self.bundle.max_history}:])")
        for i, e in enumerate(events):
            if not isinstance(e, Event):
                raise TypeError(f"history[{i}] is a {type(e).__name__}, expected bua.events.Event "
                                "(or pass the history as event text lines)")
        try:
            validate_events(events, self.vocab, source=HISTORY_SOURCE)
        except DataError as exc:
            raise ValueError(str(exc)) from exc
        return events

    def soft_tokens(self, history) -> np.ndarray:
        """The projected history: float32 [n_soft, n_embd], what enters the LLM as rows."""
        events = self._events(history)
        return self._soft_rows(events)

    def _soft_rows(self, events: Sequence[Event]) -> np.ndarray:
        batch, mask = events_to_batch([events], self.bundle.max_history)
        soft, soft_mask = self._encoder.run(["soft_tokens", "soft_mask"], {"events": batch, "mask": mask})
        rows = soft[0][soft_mask[0].astype(bool)]
        return np.ascontiguousarray(rows, dtype=np.float32)

    def _window(self, events: Sequence[Event]) -> Sequence[Event]:
        """The events the encoder reads (the last `max_history`)."""
        return events[-self.bundle.max_history:]

    # ------------------------------------------------------------------ public API
    def predict(self, history, top_k: int = 5, explain: bool = True) -> Prediction:
        """Top-k next behaviors with probabilities (always vocabulary entries).

        explain=True first runs the understanding rounds (key behaviors, patterns, summary)
        and returns their text; explain=False is the fast path (prediction round only).
        """
        _check_top_k(top_k)
        events = self._events(history)
        soft = self._soft_rows(events)
        with self._lock:
            explanation, scores = self.engine.begin(PREDICT, soft, explain, None, self.max_answer_tokens,
                                                    score=self.scoring == "constrained",
                                                    window=self._window(events))
            n_prompt = self.engine.n_past
            if scores is None:  # summed scoring: the shortlist after the prompt
                scores = self.engine.shortlist_candidates(top_k, self.score_tolerance)
        return self._prediction(scores, top_k, explanation, n_prompt, len(soft))

    def stream(self, history=(), top_k: int = 5, window: int | None = None, drop_block: int | None = None,
               explain_every: int = 0) -> "PredictionStream":
        """A per-user stream: `stream.append(event)` predicts after each new event, evaluating
        only the new soft row(s) and the question when the KV cache still holds this stream's
        earlier rows (docs/ON_DEVICE.md: window policy, switching users, cost)."""
        return PredictionStream(self, history, top_k, window, drop_block, explain_every)

    def _stream_predict(self, stream: "PredictionStream", soft: np.ndarray, keep_rows: int,
                        top_k: int) -> tuple[Prediction, int]:
        """The prediction round after `soft`, reusing the first `keep_rows` rows when the cache
        holds them; also returns how many positions it evaluated."""
        engine = self.engine
        with self._lock:
            # a stream's owner mark means the cache holds the prediction round's opening
            reuse = engine.owner is stream and 0 < keep_rows <= self._stream_rows
            constrained = self.scoring == "constrained"
            if reuse:
                kept = len(engine.opening) + keep_rows
                engine.session.truncate(kept)
                scores = engine.eval_segments(round_prompt_segments(self.template, self.chat, PREDICT, True)[1:],
                                              soft[keep_rows:], score=constrained)
            else:
                kept, scores = engine.start(PREDICT, soft, score=constrained)
            engine.claim(stream)
            self._stream_rows = len(soft)
            n_prompt = engine.n_past
            if scores is None:  # summed scoring: the shortlist after the prompt
                scores = self.engine.shortlist_candidates(top_k, self.score_tolerance)
        return self._prediction(scores, top_k, {}, n_prompt, len(soft)), n_prompt - kept

    def _prediction(self, scores: Shortlist, top_k: int, explanation: dict[str, str], n_prompt: int,
                    n_soft: int) -> Prediction:
        probs = scores.probabilities()
        logp = scores.exact_logprob()
        order = np.argsort(-logp, kind="stable")[:top_k]
        top = [BehaviorScore(self.vocab.behaviors[i], int(i), float(probs[i]), float(logp[i])) for i in order]
        return Prediction(top, explanation, n_prompt, n_soft, int(scores.scored.sum()))

    def behavior_logprobs(self, history, explain: bool = False) -> np.ndarray:
        """log P(behavior name | dialogue) for every behavior id, as `scoring` scores them (for
        evaluation)."""
        events = self._events(history)
        soft = self._soft_rows(events)
        seen = self._window(events)
        with self._lock:
            if self.scoring == "constrained":
                return self.engine.begin(PREDICT, soft, explain, None, self.max_answer_tokens, score=True,
                                         window=seen)[1].logprob
            self.engine.begin(PREDICT, soft, explain, None, self.max_answer_tokens, window=seen)
            return self.engine.score_candidates()

    def generate(self, history, horizon: str = "1d", explain: bool = True,
                 max_retries: int = 1, temperature: float = GENERATION_TEMPERATURE,
                 top_p: float = GENERATION_TOP_P, seed: int = 0,
                 min_p: float = GENERATION_MIN_P) -> GeneratedDay:
        """The next day's events, parsed in the bundle's serialization format.

        The answer starts with the next day's abbreviation (`bua.dialogue.answer_prefix`), the
        model writes the rest, sampled at `temperature` within nucleus `top_p`, without the tokens
        less likely than `min_p` times the most likely one (0 = off), from `seed` (the
        same call gives the same day; temperature 0 decodes greedily, which writes the single
        most likely line over and over). The first attempt decodes freely and must parse
        strictly (a last line that max_generation_tokens cut is left out, and the day's rules
        `unique_lines` and `stop_at_day_end` hold); if it does not, up to `max_retries` retries
        decode under a GBNF grammar of the event-line format (restricted to the next day),
        keeping the lines that parse.
        Raises GenerationError with the model's text if no attempt yields an event.
        """
        if horizon != "1d":
            raise ValueError(f"unsupported horizon {horizon!r}: bundles are trained to generate "
                             "the next day ('1d')")
        if not (isinstance(temperature, numbers.Real) and 0.0 <= temperature <= 5.0):
            raise ValueError(f"temperature must lie in [0, 5] (0 = greedy), got {temperature!r}")
        if not (isinstance(top_p, numbers.Real) and 0.0 < top_p <= 1.0):
            raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
        if not (isinstance(min_p, numbers.Real) and 0.0 <= min_p < 1.0):
            raise ValueError(f"min_p must lie in [0, 1), got {min_p!r}")
        _check_count("seed", seed, 0, 2**32 - 1)
        events = self._events(history)
        soft = self._soft_rows(events)
        context = question_context(GENERATE, events, self.vocab.behaviors)
        prefix = answer_prefix(GENERATE, events)
        next_day = (events[-1].day + 1) % 7
        grammar = event_lines_grammar(self.vocab, days=[next_day], after_day=True)
        stop = day_end_stops(next_day) if self.stop_at_day_end else []
        with self._lock:
            explanation = self.engine.begin(GENERATE, soft, explain, context, self.max_answer_tokens,
                                            window=self._window(events))[0]
            self.engine.session.eval_tokens(self.engine.tokens(prefix))
            attempts: list[str] = []
            for attempt in range(1 + max_retries):
                constrained = attempt > 0
                out = self.engine.session.generate(self.max_generation_tokens, stop, temperature=temperature,
                                                   top_p=top_p, min_p=min_p, seed=seed + attempt,
                                                   grammar=grammar if constrained else "", keep=False,
                                                   unique_lines=self.unique_lines)
                text = prefix + out["text"]
                if out["stop_reason"] == "max_tokens" and "\n" in text:
                    text = text[:text.rindex("\n")]  # the line the token limit cut is no event
                text = text.strip()
                attempts.append(text)
                if not constrained:
                    try:
                        parsed = parse_events(text, self.vocab, source="generated day")
                        if parsed:
                            return GeneratedDay(parsed, text, explanation, False, free_text=text)
                    except DataError:
                        pass
                    continue
                # Under the grammar every complete line has the right form; drop the lines that
                # repeat or go back in time.
                parsed, errors = parse_events_report(text, self.vocab, source="generated day")
                if parsed:
                    return GeneratedDay(parsed, text, explanation, True, len(errors), attempts[0])
        raise GenerationError(
            f"the model's generated day did not parse after {len(attempts)} attempt(s) "
            f"({max_retries} grammar-constrained); last text: {attempts[-1][:300]!r}", attempts)


class PredictionStream:
    """One user's behavior log arriving event by event (`OnDevicePredictor.stream`).

    The behavior encoder is causal and counts positions from the window's first event, so
    appending an event leaves the earlier soft rows, and their KV cache, unchanged: `append`
    evaluates the new row(s), the question and the candidates. The prediction equals a fresh
    `predict(stream.events, explain=False)` up to float noise.

    Window: when the history would exceed `window` events (default and at most the bundle's
    `max_history`; an app may keep fewer, e.g. the history length the model was trained on), the
    oldest events are dropped in a block of `drop_block` (default window // 4) at once; that append
    re-evaluates the whole window (it changes every encoder state), the next ones are
    incremental again. A predictor holds one stream's rows at a time: appending to another
    stream, or any `predict` / `generate` call, makes that stream's next append a full
    evaluation. `explain_every` N > 0 refreshes `explanation` (the understanding rounds, the
    expensive part) on every N-th append; `explain()` refreshes it on demand.
    """

    def __init__(self, predictor: OnDevicePredictor, history=(), top_k: int = 5, window: int | None = None,
                 drop_block: int | None = None, explain_every: int = 0) -> None:
        _check_top_k(top_k)
        window = predictor.bundle.max_history if window is None else window
        _check_count("window", window, 1, predictor.bundle.max_history)
        drop_block = max(1, window // 4) if drop_block is None else drop_block
        _check_count("drop_block", drop_block, 1, window)
        _check_count("explain_every", explain_every, 0, MAX_CONTEXT)
        self.predictor = predictor
        self.top_k = top_k
        self.window = window
        self.drop_block = drop_block
        self.explain_every = explain_every
        self.events: list[Event] = predictor._events(history)[-window:] if _has_events(history) else []
        self.prediction: Prediction | None = None
        self.explanation: dict[str, str] = {}
        self.appended = 0   # events since the explanation was refreshed
        self.evaluated = 0  # prompt positions the last append evaluated (the rest came from the cache)
        self._incremental = predictor.bundle.soft_tokens.n_soft_fixed is None

    def append(self, event) -> Prediction:
        """Adds one event (an `Event` or one event text line) and predicts the next behavior."""
        return self.extend([event] if isinstance(event, Event) else event)

    def extend(self, events) -> Prediction:
        """Adds events (Events, an int array or event text lines) and predicts the next behavior."""
        new = self.predictor._events(events)
        window = stream_window(self.events + new, self.window, self.drop_block)
        kept = len(self.events) if len(window) == len(self.events) + len(new) else 0
        window = self.predictor._events(window)  # checks order and the vocabulary
        soft = self.predictor._soft_rows(window)
        self.events = window
        keep_rows = self.predictor.bundle.soft_tokens.n_soft(kept) if self._incremental and kept else 0
        self.prediction, self.evaluated = self.predictor._stream_predict(self, soft, keep_rows, self.top_k)
        self.appended += len(new)
        if self.explain_every and self.appended >= self.explain_every:
            self.explain()
        return self.prediction

    def explain(self) -> dict[str, str]:
        """Regenerates the understanding rounds for the current window (seconds, not ms)."""
        if not self.events:
            raise ValueError("the stream has no events yet: append one first")
        self.explanation = self.predictor.predict(self.events, top_k=self.top_k, explain=True).explanation
        self.appended = 0
        return self.explanation


def stream_window(events: Sequence[Event], window: int, drop_block: int) -> list[Event]:
    """A stream's history after events were appended: when it exceeds `window`, the oldest
    events go in whole blocks of `drop_block` (PredictionStream's window policy)."""
    overflow = len(events) - window
    if overflow <= 0:
        return list(events)
    dropped = -(-overflow // drop_block) * drop_block  # whole blocks
    return list(events[dropped:])


def _has_events(history) -> bool:
    if isinstance(history, np.ndarray):
        return history.size > 0
    if isinstance(history, (str, list, tuple)):
        return len(history) > 0
    return history is not None
