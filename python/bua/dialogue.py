"""Multi-round dialogues with one soft-token slot (paper sec. 3.4): the contract training
and the runtime share: task names, the `DialogueTemplate`, rendering a dialogue into `Segment`s
in a `bua.chat.ChatFormat`, and tokenizing them segment by segment.

The segment layout and its rules are in docs/ARCHITECTURE.md ("The soft-token slot"); the training
dialogues built on this contract (stages 1-3, from labels) are in `bua.training.dialogues`.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from bua.chat import ChatFormat
from bua.events import DAY_ABBRS, DAY_NAMES, Event

__all__ = [
    "ALL_TASKS",
    "BEHAVIORS_FIELD",
    "COUNTED_TASKS",
    "DEFAULT_MARKER",
    "QUESTION_FIELD",
    "DialogueTemplate",
    "EXPLAIN_FIRST_SECTION",
    "EXPLAIN_LAST_SECTION",
    "EXPLAIN_SECTIONS",
    "FINAL_TASKS",
    "GENERATE",
    "PREDICT",
    "REFLECT",
    "SOFT_TOKEN_ID",
    "SCORING_RULES",
    "STAGE1_TASKS",
    "STAGE2_EXPLAIN_TASKS",
    "STAGE3_TASKS",
    "Segment",
    "TokenizedDialogue",
    "answer_prefix",
    "answer_segment",
    "answer_suffix",
    "default_template",
    "dialogue_text",
    "question_context",
    "render_dialogue",
    "round_prompt_segments",
    "tokenize_segments",
]

# ---------------------------------------------------------------------- task names
RECONSTRUCT = "reconstruct"
CURRENT_SCENE = "current_scene"
FUTURE_SCENE = "future_scene"
HOME_WORK = "home_work"
HOBBIES = "hobbies"
KEY_BEHAVIORS = "key_behaviors"
PATTERNS = "patterns"
SUMMARY = "summary"
PREDICT = "predict"
GENERATE = "generate"
REFLECT = "reflect"

STAGE1_TASKS = (RECONSTRUCT, CURRENT_SCENE, FUTURE_SCENE, HOME_WORK, HOBBIES)
STAGE2_EXPLAIN_TASKS = (KEY_BEHAVIORS, PATTERNS, SUMMARY)
# every understanding answer is one line (the labels; tests/test_labels.py): at run time a newline ends it
EXPLAIN_ANSWER_END = "\n"
# Each understanding answer is "Header: ..." sentences in a fixed order (bua.labels.tasks,
# bua.labels.profile.Summary): it opens with its first header, and the sentence after its last
# header ends it (tests/test_labels.py).
EXPLAIN_SECTIONS = {KEY_BEHAVIORS: ("Frequent:", "Phase shifts:"), PATTERNS: ("Sequences:", "Time:", "Place:"),
                    SUMMARY: ("Trait:", "Habits:", "Anchors:")}
EXPLAIN_FIRST_SECTION = {task: headers[0] for task, headers in EXPLAIN_SECTIONS.items()}
EXPLAIN_LAST_SECTION = {task: headers[-1] for task, headers in EXPLAIN_SECTIONS.items()}
# the rounds whose "<behavior> (<n>)" states the behavior's number of events in the history
# (bua.labels.tasks.key_behaviors; a "(<n>x)" elsewhere counts a sequence or an anchor)
COUNTED_TASKS = (KEY_BEHAVIORS,)
FINAL_TASKS = (PREDICT, GENERATE)
STAGE3_TASKS = (REFLECT,)
ALL_TASKS = STAGE1_TASKS + STAGE2_EXPLAIN_TASKS + FINAL_TASKS + STAGE3_TASKS
# How a behavior name is scored as the prediction round's answer. "constrained": the answer
# must be a behavior name, so at each branch of the names' token trie the next-token
# distribution is renormalized over the tokens that continue some name; "summed": the name's
# log-probabilities under the unconstrained model, summed over its tokens and the end of turn.
SCORING_RULES = ("constrained", "summed")

DEFAULT_MARKER = "<behavior_history>"
QUESTION_FIELD = "{question}"  # where a question-first preamble puts the first round's question
# written by this bua; 1 (no QUESTION_FIELD), 2 (no question_first_tasks), 3 (no
# history_in_reply_tasks) and 4 (no BEHAVIORS_FIELD) are still read
TEMPLATE_VERSION = 5
BEHAVIORS_FIELD = "{behaviors}"  # a question's list of the history's behavior names (question_context)
SOFT_TOKEN_ID = -1  # placeholder id of soft-token positions in `tokenize_segments`

_FIELD = re.compile(r"\{([a-z_]+)\}")


# ---------------------------------------------------------------------- segments, template
@dataclass(frozen=True)
class Segment:
    """One piece of a dialogue. ``kind="soft"`` is the behavior-embedding slot (no text).

    `round` and `task` name the round the segment belongs to (prompt and answer segments
    alike); `is_answer` marks the segments the loss covers (answer + assistant suffix).
    """

    kind: Literal["text", "soft"]
    text: str = ""
    is_answer: bool = False
    round: int = -1
    task: str = ""


@dataclass(frozen=True)
class DialogueTemplate:
    """System prompt, soft-token marker and the user text of every task.

    `preamble` opens the first user turn and contains `marker` exactly once; a task's
    `questions[task]` follows it in the first round, or takes the place of `QUESTION_FIELD` in
    it (question first), or, for the tasks in `question_first_tasks`, comes on a line of its own
    before it; it stands alone in later rounds. For the tasks in `history_in_reply_tasks` the
    first user turn is the question alone and the preamble opens the assistant's reply, so the
    answer follows right after the text that ends the preamble (a newline by default).
    """

    system: str
    questions: dict[str, str]
    marker: str = DEFAULT_MARKER
    preamble: str = "Behavior history: " + DEFAULT_MARKER + "\n"
    version: int = TEMPLATE_VERSION
    question_first_tasks: tuple[str, ...] = ()
    history_in_reply_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.marker:
            raise ValueError("the soft-token marker may not be empty")
        if self.preamble.count(self.marker) != 1:
            raise ValueError(f"the preamble must contain the marker {self.marker!r} exactly "
                             f"once: {self.preamble!r}")
        if self.preamble.count(QUESTION_FIELD) > 1:
            raise ValueError(f"the preamble may hold {QUESTION_FIELD} at most once: {self.preamble!r}")
        if QUESTION_FIELD in self.preamble.split(self.marker)[1]:
            raise ValueError(f"{QUESTION_FIELD} must precede the marker in the preamble (a question after "
                             f"the history belongs after the preamble): {self.preamble!r}")
        if self.question_first and self.version < 2:
            raise ValueError(f"a preamble with {QUESTION_FIELD} needs dialogue template version 2, "
                             f"got version {self.version}")
        object.__setattr__(self, "question_first_tasks", tuple(self.question_first_tasks))
        if self.question_first_tasks:
            if self.question_first:
                raise ValueError(f"question_first_tasks is redundant when the preamble holds {QUESTION_FIELD} "
                                 "(every task's question comes first)")
            if self.version < 3:
                raise ValueError(f"question_first_tasks needs dialogue template version 3, got version {self.version}")
            unknown = [t for t in self.question_first_tasks if t not in self.questions]
            if unknown:
                raise ValueError(f"question_first_tasks names tasks without a question: {', '.join(unknown)}")
        object.__setattr__(self, "history_in_reply_tasks", tuple(self.history_in_reply_tasks))
        if self.history_in_reply_tasks:
            if self.question_first:
                raise ValueError(f"history_in_reply_tasks cannot be combined with a preamble holding "
                                 f"{QUESTION_FIELD}: the question is the user turn, the preamble the reply's opening")
            if self.version < 4:
                raise ValueError("history_in_reply_tasks needs dialogue template version 4, "
                                 f"got version {self.version}")
            unknown = [t for t in self.history_in_reply_tasks if t not in self.questions]
            if unknown:
                raise ValueError(f"history_in_reply_tasks names tasks without a question: {', '.join(unknown)}")
            both = [t for t in self.history_in_reply_tasks if t in self.question_first_tasks]
            if both:
                raise ValueError(f"tasks in both question_first_tasks and history_in_reply_tasks: {', '.join(both)}")
            if not self.preamble.split(self.marker)[1]:
                raise ValueError("history_in_reply_tasks needs text after the marker in the preamble (the "
                                 f"position the answer is read from): {self.preamble!r}")
        if self.marker in self.system:
            raise ValueError("the system prompt may not contain the marker")
        for task, q in self.questions.items():
            if not isinstance(q, str) or not q:
                raise ValueError(f"question of task {task!r} must be a non-empty string")
            if self.marker in q:
                raise ValueError(f"question of task {task!r} contains the marker; it belongs "
                                 f"in the preamble only")
            if BEHAVIORS_FIELD in q and self.version < 5:
                raise ValueError(f"a question with {BEHAVIORS_FIELD} needs dialogue template version 5, "
                                 f"got version {self.version}")
        object.__setattr__(self, "questions", dict(self.questions))

    @property
    def question_first(self) -> bool:
        """True when every task's first-round question precedes the soft slot: the text after the
        slot is then the same for every task (a stream re-evaluates only it per event)."""
        return QUESTION_FIELD in self.preamble

    def asks_first(self, task: str) -> bool:
        """Whether `task`'s first-round question precedes the soft slot."""
        return self.question_first or task in self.question_first_tasks or self.history_in_reply(task)

    def history_in_reply(self, task: str) -> bool:
        """Whether `task`'s first round puts the history in the assistant's reply."""
        return task in self.history_in_reply_tasks

    def first_turn(self, task: str, context: dict[str, str] | None = None) -> tuple[str, str]:
        """The first round's text before and after the soft-token marker: the user's, or for
        `history_in_reply_tasks` the reply's opening (the question is then the user turn)."""
        before, after = self.preamble.split(self.marker)
        if self.history_in_reply(task):
            return before, after
        q = self.question(task, context)
        if self.question_first:
            return before.replace(QUESTION_FIELD, q), after
        if task in self.question_first_tasks:
            return q + "\n" + before, after
        return before, after + q

    def fields(self, task: str) -> list[str]:
        """The ``{name}`` fields the task's question needs from its context."""
        self.question(task, {f: "" for f in _FIELD.findall(self.questions.get(task, ""))})
        return _FIELD.findall(self.questions[task])

    def question(self, task: str, context: dict[str, str] | None = None) -> str:
        try:
            q = self.questions[task]
        except KeyError:
            raise KeyError(f"the dialogue template has no question for task {task!r} "
                           f"(has: {', '.join(self.questions)})") from None
        if context is None and "{" not in q:
            return q

        def fill(m: re.Match) -> str:
            name = m.group(1)
            if context is None or name not in context:
                raise KeyError(f"question of task {task!r} needs context field {name!r}")
            return str(context[name])

        return _FIELD.sub(fill, q)

    def user_text(self, task: str, first: bool, context: dict[str, str] | None = None) -> str:
        if not first or self.history_in_reply(task):
            return self.question(task, context)
        return self.marker.join(self.first_turn(task, context))

    def to_dict(self) -> dict:
        return {"version": self.version, "system": self.system, "marker": self.marker,
                "preamble": self.preamble, "questions": dict(self.questions),
                "question_first_tasks": list(self.question_first_tasks),
                "history_in_reply_tasks": list(self.history_in_reply_tasks)}

    @classmethod
    def from_dict(cls, d: dict) -> "DialogueTemplate":
        v = d.get("version", TEMPLATE_VERSION)
        if v not in range(1, TEMPLATE_VERSION + 1):
            raise ValueError(f"unsupported dialogue template version {v} (this bua reads 1 to "
                             f"{TEMPLATE_VERSION})")
        return cls(system=d["system"], questions=dict(d["questions"]),
                   marker=d.get("marker", DEFAULT_MARKER),
                   preamble=d.get("preamble", "Behavior history: " + DEFAULT_MARKER + "\n"),
                   version=v, question_first_tasks=d.get("question_first_tasks", ()),
                   history_in_reply_tasks=d.get("history_in_reply_tasks", ()))


# The questions name the fields of an event line in words, never as a written sample: a
# 135M model copies a sample's tokens into its answer ("@location"; training/README.md).
_EVENT_FIELDS = "one per line with its day, time, place and behavior"


def default_template(question_first: bool = False, question_first_tasks: Sequence[str] = (),
                     history_in_reply_tasks: Sequence[str] = (),
                     generation_names: bool = False) -> DialogueTemplate:
    """bua's template; `question_first` puts every first round's question before the history,
    `question_first_tasks` only those tasks', `history_in_reply_tasks` moves those tasks' history
    into the reply, `generation_names` ends the generate question with the history's behavior
    names (bua extensions, `data.question_first`, `data.question_first_tasks`,
    `data.history_in_reply_tasks` and `data.generation_names`)."""
    preamble = "Behavior history: " + DEFAULT_MARKER + "\n"
    generate = f"Generate the user's events for the next day ({{day}}), {_EVENT_FIELDS}."
    if generation_names:
        generate += f" The history's behaviors: {BEHAVIORS_FIELD}."
    return DialogueTemplate(
        preamble=QUESTION_FIELD + "\n" + preamble if question_first else preamble,
        question_first_tasks=question_first_tasks,
        history_in_reply_tasks=history_in_reply_tasks,
        system=("You are a behavior understanding assistant. You read a user's encoded daily "
                "behavior history and answer questions about the user."),
        questions={
            RECONSTRUCT: f"List the user's most recent events, {_EVENT_FIELDS}.",
            CURRENT_SCENE: "Summarize the user's scene over the past 2 hours.",
            FUTURE_SCENE: "Infer the user's likely scene in the next 2 hours.",
            HOME_WORK: "Identify the user's home and workplace.",
            HOBBIES: "What are the user's hobbies?",
            KEY_BEHAVIORS: "Identify the user's key behaviors: frequent ones and those that "
                           "mark a change of daily phase.",
            PATTERNS: "Describe the user's recurring behavior patterns in time and place.",
            SUMMARY: "Summarize the user's features: trait, habits, behavioral anchors.",
            PREDICT: "Predict the user's next behavior. Answer with the behavior name only.",
            GENERATE: generate,
            REFLECT: "Review this user feature summary, name its issues and write a corrected "
                     "summary.\nDraft: {draft}",
        },
    )


def question_context(task: str, history: Sequence[Event], behavior_names: Sequence[str]) -> dict[str, str]:
    """The context fields a task's default question may need that follow from the history
    (training and the runtime alike): ``generate`` -> ``{"day": <next day's name>, "behaviors":
    <the history's behavior names, most frequent first, ties in order of first appearance>}``;
    `behavior_names` is the vocabulary's names by behavior id."""
    if task == GENERATE:
        ranked = Counter(e.behavior for e in history).most_common()  # ties keep first appearance
        return {"day": DAY_NAMES[_next_day(history)],
                "behaviors": ", ".join(behavior_names[b] for b, _ in ranked)}
    return {}


def answer_prefix(task: str, history: Sequence[Event]) -> str:
    """The start of `task`'s answer that the question already fixes, written into the dialogue
    before the model continues it (runtime and evaluation alike): every line of a generated
    day begins with the day the question names, so ``generate`` answers start with its
    abbreviation and a space (``"Sun "``); other tasks have none. Training keeps these
    characters in the answer: a generation answer is hundreds of tokens, so its opening
    token carries too little of the round's loss to be learned (training/README.md)."""
    if task == GENERATE:
        return DAY_ABBRS[_next_day(history)] + " "
    return ""


def _next_day(history: Sequence[Event]) -> int:
    if not history:
        raise ValueError("generation needs a non-empty history to name the next day")
    return (history[-1].day + 1) % 7


# ---------------------------------------------------------------------- rendering
def answer_suffix(chat: ChatFormat) -> str:
    """What follows an answer's text in its answer segment (ChatML: ``<|im_end|>\\n``)."""
    return chat.assistant_suffix


def answer_segment(answer: str, chat: ChatFormat, round: int, task: str) -> Segment:
    return Segment("text", answer + chat.assistant_suffix, True, round, task)


def round_prompt_segments(template: DialogueTemplate, chat: ChatFormat, task: str,
                          first: bool, round: int | None = None,
                          context: dict[str, str] | None = None) -> list[Segment]:
    """The prompt segments of one round, ending where its answer starts (the assistant prefix,
    or for a `history_in_reply_tasks` first round the preamble's end).

    First round: [text up to the marker, soft, text after it]; later rounds: one text
    segment. The runtime appends round after round (with `answer_segment` in between) on
    one KV sequence; concatenated, the pieces equal `render_dialogue`.
    """
    r = (0 if first else -1) if round is None else round
    if not first:
        tail = template.question(task, context) + chat.user_suffix + chat.assistant_prefix
        return [Segment("text", chat.user_prefix + tail, False, r, task)]
    before, after = template.first_turn(task, context)
    head = chat.bos + chat.system_prefix + template.system + chat.system_suffix + chat.user_prefix
    if template.history_in_reply(task):
        head += template.question(task, context) + chat.user_suffix + chat.assistant_prefix + before
        return [Segment("text", head, False, r, task), Segment("soft", "", False, r, task),
                Segment("text", after, False, r, task)]
    head += before
    return [Segment("text", head, False, r, task), Segment("soft", "", False, r, task),
            Segment("text", after + chat.user_suffix + chat.assistant_prefix, False, r, task)]


def render_dialogue(template: DialogueTemplate, chat: ChatFormat, tasks: Sequence[str],
                    answers: Sequence[str | None],
                    contexts: Sequence[dict[str, str] | None] | None = None) -> list[Segment]:
    """Canonical segments of a dialogue. An answer of None stops the rendering right after
    that round's assistant prefix (the prompt for generating / scoring that round)."""
    if len(tasks) == 0:
        raise ValueError("a dialogue needs at least one round")
    if len(answers) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but {len(answers)} answers")
    if contexts is not None and len(contexts) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but {len(contexts)} contexts")
    segs: list[Segment] = []
    for k, (task, ans) in enumerate(zip(tasks, answers)):
        ctx = contexts[k] if contexts is not None else None
        segs += round_prompt_segments(template, chat, task, k == 0, k, ctx)
        if ans is None:
            break
        segs.append(answer_segment(ans, chat, k, task))
    return segs


def dialogue_text(segments: Sequence[Segment], marker: str = DEFAULT_MARKER) -> str:
    """The segments as one string, the soft slot written as `marker` (for display and for
    comparing with ``apply_chat_template``)."""
    return "".join(s.text if s.kind == "text" else marker for s in segments)


# ---------------------------------------------------------------------- tokenization
@dataclass(frozen=True)
class TokenizedDialogue:
    """Token ids of a dialogue, the soft slot as `n_soft` ids equal to `SOFT_TOKEN_ID`.

    `round_ids` gives every position its round (prompt, soft and answer positions alike),
    `answer_mask` the positions the loss covers; `spans` lists (round, task, start, end) of
    each answer's token span (end exclusive) so training can weight rounds (Eq. 3-5).
    """

    input_ids: np.ndarray      # int64 [T]
    answer_mask: np.ndarray    # bool [T]
    round_ids: np.ndarray      # int64 [T]
    soft_start: int
    n_soft: int
    spans: tuple[tuple[int, str, int, int], ...]

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_segments(segments: Sequence[Segment], tokenizer, *, n_soft: int = 1,
                      cache: dict[str, list[int]] | None = None) -> TokenizedDialogue:
    """Tokenizes each text segment on its own (HF tokenizer, ``add_special_tokens=False``).

    `cache` (text -> ids) may be shared across calls: prompt segments repeat across a whole
    dataset.
    """
    ids: list[int] = []
    mask: list[bool] = []
    rounds: list[int] = []
    spans: list[tuple[int, str, int, int]] = []
    soft_start = -1
    for s in segments:
        if s.kind == "soft":
            if soft_start >= 0:
                raise ValueError("a dialogue has exactly one soft segment; found two")
            soft_start = len(ids)
            ids += [SOFT_TOKEN_ID] * n_soft
            mask += [False] * n_soft
            rounds += [s.round] * n_soft
            continue
        if cache is not None and s.text in cache:
            t = cache[s.text]
        else:
            t = list(tokenizer(s.text, add_special_tokens=False)["input_ids"])
            if cache is not None and not s.is_answer:
                cache[s.text] = t
        if s.is_answer:
            spans.append((s.round, s.task, len(ids), len(ids) + len(t)))
        ids += t
        mask += [s.is_answer] * len(t)
        rounds += [s.round] * len(t)
    if soft_start < 0:
        raise ValueError("the dialogue has no soft segment")
    return TokenizedDialogue(np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool),
                             np.asarray(rounds, dtype=np.int64), soft_start, n_soft,
                             tuple(spans))
