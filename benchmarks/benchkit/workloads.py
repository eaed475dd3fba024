"""Fixed inputs shared by every comparison: histories, prompts, dialogues, candidates.

Histories are the last 40 events before a prediction target (what the bundles are trained on),
one per simulated user, always the same ones. Text-side inputs are built from the same
template and chat format as the bundle's soft-token prompt, so the two differ only in how the
history enters: soft-token rows vs TALLRec-style event lines.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from bua.chat import ChatFormat
from bua.dialogue import PREDICT, DialogueTemplate, Segment, round_prompt_segments
from bua.events import Event
from bua.textformat import format_events
from bua.training.dialogues import stage2_dialogue

HISTORY_LEN = 40


@lru_cache(maxsize=1)
def _samples():
    from benchkit.artifacts import dataset
    from bua.samples import prediction_samples

    ds = dataset()
    return ds, prediction_samples(ds, history_len=HISTORY_LEN, max_per_user=1)


def samples(n: int) -> list:
    """The first n fixed prediction samples (one per user)."""
    _, all_samples = _samples()
    if n > len(all_samples):
        raise ValueError(f"asked for {n} histories but the benchmark dataset has {len(all_samples)}")
    return list(all_samples[:n])


def histories(n: int) -> list[list[Event]]:
    return [list(s.history) for s in samples(n)]


def text_prompt_parts(template: DialogueTemplate, chat: ChatFormat, events: Sequence[Event], vocab) -> tuple[str, str]:
    """The TALLRec-style prediction prompt as (head, rest): the soft-token prompt with the
    marker replaced by the history's event lines. `head` is the same opening text the soft
    prompt has (both runtimes keep it in the KV cache between calls)."""
    head, soft, tail = round_prompt_segments(template, chat, PREDICT, True)
    assert soft.kind == "soft"
    return head.text, format_events(events, vocab) + tail.text


@dataclass(frozen=True)
class Round:
    """One dialogue round: its prompt segments and (except the final round) its answer text."""

    task: str
    prompt: list[Segment]
    answer: str | None


def explain_dialogue(sample, template: DialogueTemplate, chat: ChatFormat) -> list[Round]:
    """key_behaviors -> patterns -> summary -> predict for `sample`, with the labeler's
    reference answers as the understanding rounds' answers (deterministic, realistic length)."""
    dialogue = stage2_dialogue(sample, _labeler(), template=template, chat=chat)
    rounds: list[Round] = []
    prompt: list[Segment] = []
    for k, task in enumerate(dialogue.tasks):
        segs = [s for s in dialogue.segments if s.round == k]
        prompt = [s for s in segs if not s.is_answer]
        final = k == len(dialogue.tasks) - 1
        rounds.append(Round(task, prompt, None if final else dialogue.answers[k]))
    assert rounds[-1].task == PREDICT
    return rounds


@lru_cache(maxsize=1)
def _labeler():
    from bua.labels import Labeler

    return Labeler(_samples()[0])


def prediction_round(template: DialogueTemplate, chat: ChatFormat) -> list[Round]:
    """The fast path's single round: the first-round prediction prompt, scored."""
    return [Round(PREDICT, round_prompt_segments(template, chat, PREDICT, True), None)]


def stream_log(n: int) -> list[Event]:
    """The first n events of the first simulated user with at least n (a log arriving event by event)."""
    from benchkit.artifacts import dataset

    for user in dataset().users:
        if len(user.events) >= n:
            return list(user.events[:n])
    raise ValueError(f"no benchmark user has {n} events")
