"""Answers of the understanding tasks, computed from the events (App. A, sec. 3.3).

Window-level answers use the sample's history window (and, for the future scene, the events
after it); user-level answers (home/workplace, hobbies, feature summary) use the user's
`UserProfile`. Every answer is short (about 15-80 tokens) and states only what the data
shows.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from bua import scenes
from bua.events import DAY_ABBRS, Event
from bua.labels.facts import (
    behavior_counts,
    busiest_places,
    busiest_quarter,
    location_changes,
    most_common,
    place_counts,
    regular_times,
    repeated_runs,
    top_behaviors,
)
from bua.labels.profile import UserProfile
from bua.textformat import format_events, format_time
from bua.vocab import Vocabulary

__all__ = ["current_scene", "event_scene", "future_scene", "hobbies_answer",
           "home_work_answer", "key_behaviors", "patterns", "reconstruct", "scene_of",
           "window_scenes"]


def _near(minute: int, center: int, before: int, after: int) -> bool:
    """minute in [center - before, center + after] on the 24 h circle."""
    d = (minute - center) % 1440
    return d <= after or d >= 1440 - before


def event_scene(e: Event, prof: UserProfile, group: str | None) -> str:
    """The daily phase (a `bua.scenes` name) of one event, from its time, the role of
    its place for this user (home / work / transit / other) and its behavior group."""
    m = e.minute
    role = prof.role(e.location)
    if role == "transit" or (group == "commute" and role == "other"):
        return scenes.MORNING_COMMUTE if 4 * 60 <= m < 12 * 60 else scenes.EVENING_COMMUTE
    if role == "work":
        if m >= 21 * 60 or m < 5 * 60:
            return scenes.NIGHT_SHIFT
        if 11 * 60 + 30 <= m < 14 * 60 and group in ("meal", "leisure", "errand"):
            return scenes.LUNCH_BREAK
        return scenes.WORKING_HOURS
    if role == "home":
        if group in ("work", "study") and 8 * 60 <= m < 19 * 60:
            return scenes.WORKING_HOURS
        weekend = e.day >= 5
        if _near(m, prof.wake_weekend if weekend else prof.wake, 30, 75):
            return scenes.MORNING_ROUTINE
        # the night from Friday to Saturday counts as a weekend night
        if _near(m, prof.bed_weekend if (e.day == 4 and m >= 12 * 60) or
                 (weekend and not (e.day == 6 and m >= 12 * 60)) else prof.bed, 75, 30):
            return scenes.PRE_BEDTIME
        if m >= 17 * 60 or m < 4 * 60:
            return scenes.EVENING_LEISURE
        return scenes.HOME_LEISURE
    if e.day < 5 and 11 * 60 + 30 <= m < 14 * 60 and group in ("meal", "errand", None):
        return scenes.LUNCH_BREAK
    if 17 * 60 <= m < 23 * 60:
        return scenes.EVENING_LEISURE
    return scenes.OUTING


def _groups(vocab: Vocabulary) -> list[str | None]:
    g = vocab.behavior_groups or {}
    return [g.get(b) for b in vocab.behaviors]


def window_scenes(events: Sequence[Event], prof: UserProfile,
                  groups: list[str | None]) -> list[str]:
    return [event_scene(e, prof, groups[e.behavior]) for e in events]


def scene_of(scenes: Sequence[str]) -> str:
    """Majority scene; ties go to the most recent."""
    c = Counter(scenes)
    top = max(c.values())
    for s in reversed(scenes):
        if c[s] == top:
            return s
    raise ValueError("no scenes")


def _path(events: Sequence[Event], vocab: Vocabulary, k: int = 3) -> str:
    locs: list[int] = []
    for e in events:
        if not locs or locs[-1] != e.location:
            locs.append(e.location)
    if len(locs) > k:
        locs = locs[-k:]
    return " -> ".join("@" + vocab.locations[x] for x in locs)


# ---------------------------------------------------------------------- stage 1
def reconstruct(history: Sequence[Event], vocab: Vocabulary, last: int = 6) -> str:
    """The last `last` events of the history as event lines."""
    return format_events(history[-last:], vocab)


def current_scene(history: Sequence[Event], prof: UserProfile, vocab: Vocabulary,
                  minutes: int = 120) -> str:
    end = history[-1].order_key
    win = [e for e in history[-40:] if e.order_key >= end - minutes]
    scene = scene_of(window_scenes(win, prof, _groups(vocab)))
    behs = ", ".join(vocab.behaviors[b] for b in top_behaviors(win, 3))
    return (f"{scene[0].upper()}{scene[1:]} ({DAY_ABBRS[win[0].day]} "
            f"{format_time(win[0].minute)}-{format_time(win[-1].minute)}): "
            f"{_path(win, vocab)}; {behs}.")


def future_scene(history: Sequence[Event], future: Sequence[Event], prof: UserProfile,
                 vocab: Vocabulary, minutes: int = 120) -> str:
    end = history[-1].order_key
    win = [e for e in future if end < e.order_key <= end + minutes]
    until = format_time((end + minutes) % 1440)
    if not win:
        return f"Next 2 h (until {until}): no recorded activity; the user is likely resting."
    scene = scene_of(window_scenes(win, prof, _groups(vocab)))
    loc = Counter(e.location for e in win).most_common(1)[0][0]
    behs = ", ".join(vocab.behaviors[b] for b in top_behaviors(win, 3))
    return f"Next 2 h (until {until}): {scene} at @{vocab.locations[loc]}; likely {behs}."


def home_work_answer(prof: UserProfile) -> str:
    v = prof.vocab
    home = f"Home: @{v.locations[prof.home]} ({round(100 * prof.home_share)}% of the time)."
    if prof.workplace is None:
        return f"{home} Workplace: none; no regular place besides home for long weekday stays."
    dpw = prof.work_days_per_week
    days = f"{dpw:.0f} days/week" if dpw >= 1 else f"{dpw:.1f} days/week"
    when = "weekdays" if prof.work_weekdays else "incl. weekends"
    return (f"{home} Workplace: @{v.locations[prof.workplace]}, {when} "
            f"{format_time(prof.work_start)}-{format_time(prof.work_end)} ({days}).")


def hobbies_answer(prof: UserProfile) -> str:
    v = prof.vocab
    if not prof.hobbies:
        groups = v.behavior_groups or {}
        cand = [b for b in prof.counts.argsort()[::-1]
                if not groups or groups.get(v.behaviors[b]) == "leisure"][:2]
        common = " and ".join(v.behaviors[b] for b in cand)
        return f"Hobbies: none stands out; leisure is mostly {common}, as for most users."
    parts = [f"{v.behaviors[h.behavior]} (@{v.locations[h.location]} ~{format_time(h.minute)}, "
             f"{h.days_per_week:.0f} days/week)" for h in prof.hobbies]  # >= 1 day/week
    return "Hobbies: " + ", ".join(parts) + "."


# ---------------------------------------------------------------------- stage 2 (window)
def key_behaviors(history: Sequence[Event], vocab: Vocabulary) -> str:
    """Frequent behaviors and those that open a new place (a change of daily phase)."""
    names, locs = vocab.behaviors, vocab.locations
    c = behavior_counts(history)
    freq = [b for b in top_behaviors(history, 3) if c[b] >= 2]
    out = "Frequent: " + (", ".join(f"{names[b]} ({c[b]})" for b in freq) if freq
                          else "no behavior repeats") + "."
    shifts: dict[int, list] = {}  # behavior -> [changes it opened, its last one's from, to]
    for b, prev, loc in location_changes(history):
        s = shifts.setdefault(b, [0, prev, loc])
        s[0] += 1
        s[1], s[2] = prev, loc
    if shifts:
        order = sorted(shifts, key=lambda b: -shifts[b][0])[:2]
        out += " Phase shifts: " + ", ".join(
            f"{names[b]} (@{locs[shifts[b][1]]} -> @{locs[shifts[b][2]]})" for b in order) + "."
    else:
        out += f" Phase shifts: none; the user stays at @{locs[history[-1].location]}."
    return out


def patterns(history: Sequence[Event], vocab: Vocabulary) -> str:
    """Recurring subsequences, regular times and places inside the window."""
    names, locs = vocab.behaviors, vocab.locations
    tri, bi = repeated_runs(history)
    seqs = []
    if tri:
        t, c = most_common(tri, 1)[0]
        if c >= 2:
            seqs.append((" -> ".join(names[x] for x in t), c))
    for p_, c in most_common(bi, 3):
        if c < 2 or len(seqs) >= 2:
            break
        s_ = " -> ".join(names[x] for x in p_)
        if not any(s_ in q for q, _ in seqs):
            seqs.append((s_, c))
    parts = ["Sequences: " + ("; ".join(f"{s_} ({c}x)" for s_, c in seqs) if seqs
                              else "none repeats") + "."]
    timed = regular_times(history)
    if timed:
        parts.append("Time: " + ", ".join(f"{names[x]} ~{format_time(m)} daily"
                                          for _, _, x, m in timed[:2]) + ".")
    else:
        parts.append(f"Time: mostly {busiest_quarter(history)}.")
    # places: the dominant behavior of the two busiest places
    by_loc = place_counts(history)
    parts.append("Place: " + ", ".join(f"{names[most_common(by_loc[x], 1)[0][0]]} @{locs[x]}"
                                       for x in busiest_places(history)[:2]) + ".")
    return " ".join(parts)
