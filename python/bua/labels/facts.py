"""What a history window shows: the statistics the key-behavior and pattern answers are made of,
and every item those answers can state truthfully.

An answer is a few sections ("Frequent: gaming (3), music (2). Phase shifts: ..."); a section's
body is either items joined by its separator or one stand-alone text ("no behavior repeats").
`window_sections` lists, for one window, each section's true items and stand-alone texts (of
the summary, the sections after its trait). The window-level labels (`bua.labels.tasks`) state
a selection of them, the runtime decodes inside them (`bua.runtime.grammar.sections_grammar`)
and `check_claims` scores an answer against them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from bua.dialogue import KEY_BEHAVIORS, PATTERNS, SUMMARY
from bua.events import Event
from bua.textformat import format_time
from bua.vocab import Vocabulary

QUARTERS = ("night", "morning", "afternoon", "evening")  # 6-hour parts of the day from midnight
REGULAR_SPREAD = 60  # minutes: a behavior seen on two or more days inside this span recurs at a time


@dataclass(frozen=True)
class Section:
    """One section of an answer and what it can say about a window."""

    header: str                 # "Frequent:"
    items: tuple[str, ...]      # every true item, the most salient first
    alone: tuple[str, ...] = ()  # true texts that are the whole body ("none repeats")
    sep: str = ", "             # between items
    max_items: int = 2          # items the labels state at most


# ---------------------------------------------------------------------- window statistics
def behavior_counts(history: Sequence[Event]) -> dict[int, int]:
    """Behavior id -> its events in `history`, in order of first occurrence."""
    c: dict[int, int] = {}
    for e in history:
        c[e.behavior] = c.get(e.behavior, 0) + 1
    return c


def top_behaviors(history: Sequence[Event], k: int) -> list[int]:
    """The `k` most frequent behaviors, ties broken by the most recent occurrence."""
    c = behavior_counts(history)
    last = {e.behavior: i for i, e in enumerate(history)}
    return sorted(c, key=lambda b: (-c[b], -last[b]))[:k]


def location_changes(history: Sequence[Event]) -> list[tuple[int, int, int]]:
    """(behavior, previous location, location) of every event at another place than the one
    before it, in time order."""
    return [(e.behavior, prev.location, e.location) for prev, e in zip(history, history[1:])
            if e.location != prev.location]


def repeated_runs(history: Sequence[Event]) -> tuple[dict[tuple, int], dict[tuple, int]]:
    """(trigrams, bigrams) of consecutive distinct behaviors -> how often each occurs, in order
    of first occurrence; a bigram's two behaviors differ, a trigram's three."""
    b = [e.behavior for e in history]
    tri: dict[tuple, int] = {}
    bi: dict[tuple, int] = {}
    for i in range(len(b) - 1):
        x, y = b[i], b[i + 1]
        if x == y:
            continue
        bi[(x, y)] = bi.get((x, y), 0) + 1
        if i + 2 < len(b):
            z = b[i + 2]
            if z != x and z != y:
                tri[(x, y, z)] = tri.get((x, y, z), 0) + 1
    return tri, bi


def most_common(d: Mapping, k: int) -> list:
    """Like Counter.most_common: by count, ties in insertion order."""
    return sorted(d.items(), key=lambda kv: -kv[1])[:k]


def regular_times(history: Sequence[Event]) -> list[tuple[int, int, int, int]]:
    """(spread, -events, behavior, median minute) of each behavior seen on two or more days whose
    times of day lie within `REGULAR_SPREAD` minutes, the tightest first."""
    by_beh: dict[int, list[Event]] = {}
    for e in history:
        by_beh.setdefault(e.behavior, []).append(e)
    timed = []
    for x, evs in by_beh.items():
        if len(evs) < 2 or evs[0].abs_day == evs[-1].abs_day:
            continue
        ms = sorted(e.minute for e in evs)
        spread = ms[-1] - ms[0]
        if spread <= REGULAR_SPREAD:
            timed.append((spread, -len(evs), x, ms[len(ms) // 2]))
    return sorted(timed)


def busiest_quarter(history: Sequence[Event]) -> str:
    """The part of the day (`QUARTERS`) holding the most events, the earliest on a tie."""
    q = [0, 0, 0, 0]
    for e in history:
        q[e.minute // 360] += 1
    return QUARTERS[q.index(max(q))]


def place_counts(history: Sequence[Event]) -> dict[int, dict[int, int]]:
    """Location -> behavior -> its events there, both in order of first occurrence."""
    by_loc: dict[int, dict[int, int]] = {}
    for e in history:
        d = by_loc.setdefault(e.location, {})
        d[e.behavior] = d.get(e.behavior, 0) + 1
    return by_loc


def busiest_places(history: Sequence[Event]) -> list[int]:
    """Locations by their number of events, ties in order of first occurrence."""
    by_loc = place_counts(history)
    return sorted(by_loc, key=lambda x: -sum(by_loc[x].values()))


def place_favorites(history: Sequence[Event]) -> list[tuple[int, int]]:
    """(behavior, location) of each place's most frequent behaviors (ties all), the busiest
    places first."""
    by_loc = place_counts(history)
    return [(b, x) for x in busiest_places(history)
            for b, n in by_loc[x].items() if n == max(by_loc[x].values())]


# ---------------------------------------------------------------------- what answers can state
def run_text(run: Sequence[int], count: int, vocab: Vocabulary) -> str:
    return f"{' -> '.join(vocab.behaviors[x] for x in run)} ({count}x)"


def key_behavior_sections(history: Sequence[Event], vocab: Vocabulary) -> list[Section]:
    """Frequent (behaviors with 2 or more events and their counts) and Phase shifts (a behavior
    that opened a change of place, or the place the user stayed at)."""
    names, locs = vocab.behaviors, vocab.locations
    c = behavior_counts(history)
    frequent = tuple(f"{names[b]} ({c[b]})" for b in top_behaviors(history, len(c)) if c[b] >= 2)
    changes = location_changes(history)
    shifts = tuple(dict.fromkeys(f"{names[b]} (@{locs[p]} -> @{locs[x]})" for b, p, x in changes))
    stays = () if changes else (f"none; the user stays at @{locs[history[-1].location]}",)
    return [Section("Frequent:", frequent, () if frequent else ("no behavior repeats",), ", ", 3),
            Section("Phase shifts:", shifts, stays, ", ", 2)]


def pattern_sections(history: Sequence[Event], vocab: Vocabulary) -> list[Section]:
    """Sequences (runs of distinct behaviors seen twice or more), Time (behaviors at a regular
    time, or the busiest part of the day) and Place (a place's most frequent behavior, ties
    all, the busiest places first)."""
    names, locs = vocab.behaviors, vocab.locations
    tri, bi = repeated_runs(history)
    runs = tuple(run_text(r, n, vocab) for d in (tri, bi) for r, n in most_common(d, len(d)) if n >= 2)
    times = tuple(f"{names[x]} ~{format_time(m)} daily" for _, _, x, m in regular_times(history))
    places = tuple(f"{names[b]} @{locs[x]}" for b, x in place_favorites(history))
    return [Section("Sequences:", runs, () if runs else ("none repeats",), "; ", 2),
            Section("Time:", times, (f"mostly {busiest_quarter(history)}",), ", ", 2),
            Section("Place:", places, (), ", ", 2)]


def part_of_day(minute: int) -> str:
    """The summary's part of the day: "in the morning" (5-12 h), "in the afternoon" (12-17 h),
    "in the evening" (17-22 h), else "late at night"."""
    h = minute // 60
    if 5 <= h < 12:
        return "in the morning"
    if 12 <= h < 17:
        return "in the afternoon"
    if 17 <= h < 22:
        return "in the evening"
    return "late at night"


def summary_sections(history: Sequence[Event], vocab: Vocabulary) -> list[Section]:
    """Habits and Anchors of the feature summary, as far as the window shows them (the Trait
    before them is a judgment of the whole log, not a fact of the window). Habits: a behavior
    where a commute behavior happened ("music while commuting by bus"), a place's most frequent
    behavior ("email at @work"), a behavior at a place in a part of the day ("gaming in the
    evening at @home"), a run seen twice ("alarm clock leads to check weather"). Anchors: a
    behavior at a regular time at its most frequent place ("alarm clock ~07:10 @home"), or a
    behavior with its events ("gaming (3x)")."""
    names, locs = vocab.behaviors, vocab.locations
    groups = vocab.behavior_groups or {}
    commute: dict[int, dict[int, None]] = {}  # location -> the commute behaviors there
    for e in history:
        if groups.get(names[e.behavior]) == "commute":
            commute.setdefault(e.location, {})[e.behavior] = None
    habits = [f"{names[e.behavior]} while commuting by {names[mode]}" for e in history
              if groups.get(names[e.behavior]) not in ("commute", "errand") for mode in commute.get(e.location, ())]
    habits += [f"{names[b]} at @{locs[x]}" for b, x in place_favorites(history)]
    habits += [f"{names[e.behavior]} {part_of_day(e.minute)} at @{locs[e.location]}" for e in history]
    _, bi = repeated_runs(history)
    habits += [f"{names[x]} leads to {names[y]}" for (x, y), n in most_common(bi, len(bi)) if n >= 2]
    anchors = []
    for _, _, x, m in regular_times(history):
        at = busiest_places([e for e in history if e.behavior == x])[0]
        anchors.append(f"{names[x]} ~{format_time(m)} @{locs[at]}")
    c = behavior_counts(history)
    top = max(c.values())
    anchors += [f"{names[b]} ({c[b]}x)" for b in top_behaviors(history, len(c)) if c[b] == top or c[b] >= 2]
    return [Section("Habits:", tuple(dict.fromkeys(habits)), (), "; ", 3),
            Section("Anchors:", tuple(dict.fromkeys(anchors)), (), "; ", 3)]


WINDOW_SECTIONS = {KEY_BEHAVIORS: key_behavior_sections, PATTERNS: pattern_sections, SUMMARY: summary_sections}


def window_sections(task: str, history: Sequence[Event], vocab: Vocabulary) -> list[Section]:
    """The sections of `task`'s answer (a key of `WINDOW_SECTIONS`) and what each can truthfully
    say about `history`."""
    if not history:
        raise ValueError(f"{task}: the history window is empty")
    return WINDOW_SECTIONS[task](history, vocab)


def check_claims(answer: str, sections: Sequence[Section]) -> tuple[int, int]:
    """(claims, right) of `answer` against `sections`: each item a section's body states is a
    claim, right when it is one of the section's true items; a body that is one of the section's
    stand-alone texts is one right claim. Text outside the sections' bodies claims nothing (the
    layout is `bua.metrics.in_sections`'s to check)."""
    found = sorted((at, s) for s in sections if (at := answer.find(s.header)) >= 0)
    claims = right = 0
    for k, (at, s) in enumerate(found):
        end = found[k + 1][0] if k + 1 < len(found) else len(answer)
        body = answer[at + len(s.header):end].strip()
        body = body[:-1].rstrip() if body.endswith(".") else body
        if not body:
            continue
        if body in s.alone:
            claims, right = claims + 1, right + 1
            continue
        pieces = [p.strip() for p in body.split(s.sep)]
        claims += len(pieces)
        right += sum(p in s.items for p in pieces)
    return claims, right
