"""The texts the parity checks run on: bua's own prompts, rendered from the run's pieces."""
from __future__ import annotations

from typing import Any

from bua.dialogue import PREDICT, answer_segment, dialogue_text, render_dialogue, round_prompt_segments
from bua.events import Event
from bua.export.parity import DEFAULT_TEXTS
from bua.textformat import format_events

GREEDY_QUESTION = "What is the capital of France?"
_CONTEXT_VALUES = {"day": "Tuesday", "draft": "The user works at the office on weekdays and jogs on Sundays."}


def _context(template: Any, task: str) -> dict[str, str]:
    return {name: _CONTEXT_VALUES.get(name, "example") for name in template.fields(task)}


def synthetic_events(vocab: Any, n: int | None = None) -> list[Event]:
    """Events that use every behavior and location name at least once, in time order."""
    n = n or max(vocab.n_behaviors, vocab.n_locations)
    events = []
    for i in range(n):
        day, minute = divmod(i * 137, 1440)
        events.append(Event(day=day % 7, minute=minute, location=i % vocab.n_locations,
                            behavior=i % vocab.n_behaviors, week=day // 7))
    return events


def tokenization_texts(vocab: Any, chat: Any, template: Any) -> list[str]:
    """Every text segment a dialogue can contain: prompts of each task (first and later
    rounds), each behavior as an answer and as a scored candidate, serialized event lines."""
    texts: list[str] = list(DEFAULT_TEXTS)
    for task in template.questions:
        ctx = _context(template, task)
        for first in (True, False):
            segs = round_prompt_segments(template, chat, task, first, 0 if first else 1, ctx)
            texts += [s.text for s in segs if s.kind == "text"]
    for name in vocab.behaviors:
        texts.append(answer_segment(name, chat, 0, PREDICT).text)
        texts.append(name + chat.end_of_turn)
    events = synthetic_events(vocab)
    for start in range(0, len(events), 16):
        texts.append(format_events(events[start:start + 16], vocab) + chat.assistant_suffix)
    return list(dict.fromkeys(texts))  # unique, in order


def logits_texts(vocab: Any, chat: Any, template: Any) -> list[str]:
    """A full prediction prompt (marker as text) with a candidate answer, and a ChatML sample."""
    prompt = dialogue_text(render_dialogue(template, chat, [PREDICT], [None]), template.marker)
    return [prompt + vocab.behaviors[0] + chat.end_of_turn, DEFAULT_TEXTS[0]]


def greedy_prompt(chat: Any, template: Any) -> str:
    return chat.render(template.system, [(GREEDY_QUESTION, None)])
