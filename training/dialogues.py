"""The curriculum's training dialogues (stages 1-3): samples from `bua.samples`, answers from a
`bua.labels.Labeler`, rendered on the soft-token slot contract of `bua.dialogue`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from bua.chat import ChatFormat
from bua.dialogue import (
    DEFAULT_MARKER,
    FINAL_TASKS,
    PREDICT,
    REFLECT,
    STAGE1_TASKS,
    STAGE2_EXPLAIN_TASKS,
    DialogueTemplate,
    Segment,
    default_template,
    dialogue_text,
    question_context,
    render_dialogue,
)
from bua.events import Event
from bua.labels import Labeler
from bua.textformat import format_events


@dataclass
class Dialogue:
    """One training / evaluation conversation about one history window."""

    segments: list[Segment]
    history: tuple[Event, ...]
    kind: str                                  # "stage1" | "stage2" | "stage3"
    tasks: list[str]
    target_behavior: int | None = None         # prediction target (stage 2, final=predict)
    target_events: tuple[Event, ...] | None = None  # generation target (final=generate)
    user_id: str = ""
    answers: list[str] = field(default_factory=list)

    def text(self, marker: str = DEFAULT_MARKER) -> str:
        return dialogue_text(self.segments, marker)


def _defaults(template, chat):
    return (template if template is not None else default_template(),
            chat if chat is not None else ChatFormat.chatml())


def stage1_dialogues(sample, labeler: Labeler, *, template: DialogueTemplate | None = None,
                     chat: ChatFormat | None = None,
                     tasks: Sequence[str] = STAGE1_TASKS) -> list[Dialogue]:
    """One single-round dialogue per stage-1 task about the sample's history."""
    template, chat = _defaults(template, chat)
    answers = labeler.stage1(sample, tasks)
    out = []
    for task in tasks:
        segs = render_dialogue(template, chat, [task], [answers[task]])
        out.append(Dialogue(segs, sample.history, "stage1", [task], None, None,
                            sample.user_id, [answers[task]]))
    return out


def stage2_dialogue(sample, labeler: Labeler, final: str = PREDICT, explain: bool = True, *,
                    template: DialogueTemplate | None = None,
                    chat: ChatFormat | None = None) -> Dialogue:
    """key_behaviors -> patterns -> summary -> final (`predict` on a `PredictionSample`,
    `generate` on a `GenerationSample`); with ``explain=False`` the final round alone (the
    runtime's fast path)."""
    template, chat = _defaults(template, chat)
    if final not in FINAL_TASKS:
        raise ValueError(f"final must be one of {FINAL_TASKS}, got {final!r}")
    history = sample.history
    if final == PREDICT:
        if not hasattr(sample, "target"):
            raise TypeError("final='predict' needs a PredictionSample (with .target)")
        final_answer = labeler.vocab.behaviors[sample.target.behavior]
        target_behavior, target_events = sample.target.behavior, None
    else:
        if not hasattr(sample, "target_day"):
            raise TypeError("final='generate' needs a GenerationSample (with .target_day)")
        final_answer = format_events(sample.target_day, labeler.vocab)
        target_behavior, target_events = None, tuple(sample.target_day)
    tasks: list[str] = []
    answers: list[str] = []
    if explain:
        a = labeler.stage2(sample)
        tasks += list(STAGE2_EXPLAIN_TASKS)
        answers += [a[t] for t in STAGE2_EXPLAIN_TASKS]
    tasks.append(final)
    answers.append(final_answer)
    contexts = [None] * (len(tasks) - 1) + [question_context(final, history, labeler.vocab.behaviors)]
    segs = render_dialogue(template, chat, tasks, answers, contexts)
    return Dialogue(segs, history, "stage2", tasks, target_behavior, target_events,
                    sample.user_id, answers)


def stage3_dialogue(sample, labeler: Labeler, *, template: DialogueTemplate | None = None,
                    chat: ChatFormat | None = None) -> Dialogue:
    """Self-reflective refinement: the question carries a flawed summary, the answer names
    its issues (App. N) and gives the corrected summary."""
    template, chat = _defaults(template, chat)
    draft, answer = labeler.reflection(sample)
    segs = render_dialogue(template, chat, [REFLECT], [answer], [{"draft": draft}])
    return Dialogue(segs, sample.history, "stage3", [REFLECT], None, None, sample.user_id,
                    [answer])
