"""User-level statistics the understanding answers are computed from.

`PopulationStats` holds the behavior shares of the training events (lift baselines).
`UserProfile.build(events, vocab, population)` derives, from one user's log:

- home: the location with the most dwell time, where dwell is the time until the user's next
  event (capped at 12 h, so gaps in the log do not count as stays);
- workplace: the non-home place with the most weekday dwell among those visited on at least
  50 % of the user's active weekdays for at least 4 h on average (None when no place
  qualifies), with its typical hours (median start / end of the stays) and days per week;
- transit places: non-home, non-work places where commute behaviors (group "commute") make
  at least 20 % of the events;
- hobbies: leisure behaviors (group "leisure" when the vocabulary has groups, else any
  behavior) the user does at least 1.8x as often as the population, at least 3 times and on
  at least 1 day a week on average; at most 3, by lift;
- wake / bed: typical times of the first event after, and the last before, each day's
  longest gap of at least 4 h (the night's sleep; works for night-shift workers too), for
  weekdays and weekends (nights ending on Saturday or Sunday) separately;
- anchors: behaviors that recur at a regular time of day (median absolute deviation <= 60
  min) at least 1.5 times a week, by regularity;
- the feature summary (App. N): trait -> habits -> behavioral anchors.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from bua.events import Event
from bua.labels.facts import part_of_day
from bua.textformat import format_time
from bua.vocab import Vocabulary

DWELL_CAP = 12 * 60
WORK_MIN_DAY_SHARE = 0.5
WORK_MIN_DWELL = 240
TRANSIT_MIN_SHARE = 0.2
HOBBY_MIN_LIFT = 1.8
HOBBY_MIN_COUNT = 3
HOBBY_MIN_DAYS_PER_WEEK = 1.0
HOBBY_MAX_POP_SHARE = 0.10
ANCHOR_MAX_MAD = 60
ANCHOR_MIN_PER_WEEK = 1.5
SLEEP_MIN_GAP = 4 * 60

# group -> adjective of the cognitive-level trait (App. N: "information-driven lifestyle")
_GROUP_TRAIT = {
    "info": "information-driven",
    "social": "socially connected",
    "errand": "practical, errand-focused",
    "meal": "food-focused",
}
_HOBBY_TRAIT = {
    "gaming": "entertainment-seeking",
    "live streaming": "entertainment-seeking",
    "fitness tracking": "health-conscious",
    "photography": "creative, outdoorsy",
    "reading ebooks": "reflective, book-loving",
    "music": "music-loving",
    "online shopping": "consumption-oriented",
}
ROUTINE_TRAIT = "routine-driven"  # the interest when no hobby or group stands out
NIGHT_SHIFT, STUDENT, COMMUTER, WORKER, HOME_WORKER, HOME_CENTERED = RHYTHMS = (
    "night-shift worker", "student with a fixed class schedule", "commuter with fixed working hours",
    "worker with fixed working hours", "home-based worker", "home-centered person without fixed work hours")


def hobby_trait(behavior: str) -> str:
    return _HOBBY_TRAIT.get(behavior, f"{behavior}-loving")


def trait_interests(vocab: Vocabulary, behaviors: Iterable[int]) -> list[str]:
    """The interests a summary's trait can open with for a log holding `behaviors` (ids): each
    one's hobby trait (leisure behaviors only when the vocabulary has groups), the groups'
    traits, and `ROUTINE_TRAIT`; a trait is "<interest> <one of RHYTHMS>"."""
    groups = vocab.behavior_groups or {}
    names = [vocab.behaviors[b] for b in sorted(set(behaviors))]
    hobbies = [hobby_trait(n) for n in names if not groups or groups.get(n) == "leisure"]
    present = {groups.get(n) for n in names}
    return list(dict.fromkeys(hobbies + [t for g, t in _GROUP_TRAIT.items() if g in present] + [ROUTINE_TRAIT]))


@dataclass(frozen=True)
class PopulationStats:
    """Behavior shares over the training events (the baseline of 'more than usual')."""

    shares: np.ndarray          # float [n_behaviors]
    group_shares: dict[str, float]

    @classmethod
    def from_events(cls, vocab: Vocabulary, events) -> "PopulationStats":
        counts = vocab.behavior_counts(events).astype(np.float64)
        total = counts.sum()
        shares = counts / total if total else np.full(len(counts), 1.0 / len(counts))
        groups: dict[str, float] = {}
        if vocab.behavior_groups:
            for b, name in enumerate(vocab.behaviors):
                g = vocab.behavior_groups.get(name)
                if g:
                    groups[g] = groups.get(g, 0.0) + float(shares[b])
        return cls(shares, groups)


@dataclass(frozen=True)
class Hobby:
    behavior: int
    count: int
    lift: float
    minute: int                 # median time of day
    location: int               # most frequent location
    days_per_week: float


@dataclass(frozen=True)
class Anchor:
    behavior: int
    minute: int
    location: int
    per_week: float
    mad: float


@dataclass(frozen=True)
class Summary:
    """The three layers of App. N."""

    trait: str
    habits: tuple[str, ...]
    anchors: tuple[str, ...]

    def render(self) -> str:
        return (f"Trait: {self.trait}. Habits: {'; '.join(self.habits)}. "
                f"Anchors: {'; '.join(self.anchors)}.")


def _circ_median(minutes: np.ndarray) -> tuple[int, float]:
    """Median time of day and median absolute deviation, robust to midnight wrap: the day
    is cut at the largest gap between observed times."""
    m = np.sort(minutes % 1440)
    if len(m) == 1:
        return int(m[0]), 0.0
    gaps = np.diff(np.concatenate([m, [m[0] + 1440]]))
    cut = int(np.argmax(gaps))
    shifted = np.where(np.arange(len(m)) > cut, m, m + 1440)  # rotate so the gap is the end
    med = float(np.median(shifted))
    mad = float(np.median(np.abs(shifted - med)))
    return int(round(med)) % 1440, mad


@dataclass
class UserProfile:
    vocab: Vocabulary
    n_events: int
    n_weeks: float
    home: int
    home_share: float
    workplace: int | None
    work_start: int | None
    work_end: int | None
    work_days_per_week: float
    work_weekdays: bool
    transit: frozenset[int]
    counts: np.ndarray
    hobbies: tuple[Hobby, ...]
    anchors: tuple[Anchor, ...]
    top_transition: tuple[int, int] | None
    wake: int                   # typical first event after a night's gap (minute of day)
    bed: int                    # typical last event before it
    wake_weekend: int           # the same for nights ending on Saturday / Sunday
    bed_weekend: int
    summary: Summary = field(init=False)
    _extra: dict = field(default_factory=dict, repr=False)

    def role(self, location: int) -> str:
        if location == self.home:
            return "home"
        if location == self.workplace:
            return "work"
        if location in self.transit:
            return "transit"
        return "other"

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, events: Sequence[Event], vocab: Vocabulary, population: PopulationStats,
              generic_locations: frozenset[int] = frozenset()) -> "UserProfile":
        """`generic_locations`: catch-all places (Foursquare's ``other``: every venue outside
        the user's top 10) that are never taken for home or workplace."""
        if not events:
            raise ValueError("cannot profile a user without events")
        log = _Log.of(events)
        groups = vocab.behavior_groups or {}
        beh_group = [groups.get(b) for b in vocab.behaviors]
        home, home_share = _home(log, vocab.n_locations, generic_locations)
        transit = _transit_locations(log, vocab.n_locations, home, beh_group)
        workplace = _workplace(log, vocab.n_locations, home, transit | set(generic_locations))
        work = _work_hours(log, workplace) if workplace is not None else (None, None, 0.0, True)
        counts = np.bincount(log.beh, minlength=vocab.n_behaviors)
        hobbies = _hobbies(log, counts, vocab.n_locations, population, beh_group if groups else None)
        anchors = _anchors(log, counts, vocab.n_locations)
        wake, bed, wake_we, bed_we = _sleep(log)
        prof = cls(vocab, log.n, log.n_weeks, home, home_share, workplace, *work, frozenset(transit), counts,
                   tuple(hobbies), tuple(anchors[:6]), _top_transition(log, counts), wake, bed, wake_we, bed_we)
        prof._extra["loc"] = log.loc
        prof._extra["beh"] = log.beh
        prof._extra["population"] = population
        prof.summary = prof._summarize(population)
        return prof

    # ------------------------------------------------------------------ summary (App. N)
    def _summarize(self, population: PopulationStats) -> Summary:
        v = self.vocab
        groups = v.behavior_groups or {}
        loc, beh = self._extra["loc"], self._extra["beh"]
        total = float(self.n_events)
        group_share: dict[str, float] = {}
        if groups:
            for b, c in enumerate(self.counts):
                g = groups.get(v.behaviors[b])
                if g:
                    group_share[g] = group_share.get(g, 0.0) + c / total

        # rhythm: where and when the user's days are organized
        if self.workplace is not None:
            night = self.work_start is not None and (self.work_start >= 18 * 60
                                                     or self.work_start < 4 * 60)
            at_work = beh[loc == self.workplace]
            study = sum(1 for b in at_work if groups.get(v.behaviors[b]) == "study")
            if night:
                rhythm = NIGHT_SHIFT
            elif groups and study > 0.4 * len(at_work):
                rhythm = STUDENT
            else:
                rhythm = COMMUTER if self.transit else WORKER
        elif group_share.get("work", 0.0) >= 0.15:
            rhythm = HOME_WORKER
        else:
            rhythm = HOME_CENTERED

        # interest: a hobby first, else the group most above the population
        if self.hobbies:
            interest = hobby_trait(v.behaviors[self.hobbies[0].behavior])
        else:
            best_g, best_lift = None, 1.2
            for g, s in group_share.items():
                if g not in _GROUP_TRAIT:
                    continue
                lift = s / max(population.group_shares.get(g, 0.0), 1e-6)
                if lift > best_lift:
                    best_g, best_lift = g, lift
            interest = _GROUP_TRAIT[best_g] if best_g else ROUTINE_TRAIT
        trait = f"{interest} {rhythm}"

        # habits: how behaviors interact with phases of the day
        habits: list[str] = []
        name = v.behaviors
        if self.transit:
            sel = np.isin(loc, list(self.transit))
            tb = Counter(beh[sel].tolist())
            modes = [b for b, _ in tb.most_common() if groups.get(name[b]) == "commute"]
            media = [b for b, _ in tb.most_common()
                     if groups.get(name[b]) not in ("commute", "errand")]
            if modes and media:
                habits.append(f"{name[media[0]]} while commuting by {name[modes[0]]}")
            elif modes:
                habits.append(f"commutes by {name[modes[0]]}")
        if self.workplace is not None:
            wb = Counter(beh[loc == self.workplace].tolist())
            if wb:
                habits.append(f"{name[wb.most_common(1)[0][0]]} at "
                              f"@{v.locations[self.workplace]}")
        for h in self.hobbies[:1]:
            habits.append(f"{name[h.behavior]} {part_of_day(h.minute)} at "
                          f"@{v.locations[h.location]}")
        if self.top_transition is not None:
            x, y = self.top_transition
            habits.append(f"{name[x]} leads to {name[y]}")
        if not habits:
            top = Counter(beh.tolist()).most_common(2)
            habits.append(" and ".join(name[b] for b, _ in top) + f" at "
                          f"@{v.locations[self.home]}")
        anchors = tuple(f"{name[x.behavior]} ~{format_time(x.minute)} "
                        f"@{v.locations[x.location]}" for x in self.anchors[:3])
        if not anchors:
            top = int(np.argmax(self.counts))
            anchors = (f"{name[top]} ({int(self.counts[top])}x)",)
        return Summary(trait, tuple(habits[:3]), anchors)


# ---------------------------------------------------------------------- UserProfile.build steps
@dataclass(frozen=True)
class _Log:
    """One user's events as arrays (time order)."""

    key: np.ndarray      # absolute minute
    loc: np.ndarray
    beh: np.ndarray
    minute: np.ndarray   # minute of the day
    absday: np.ndarray   # calendar day
    dow: np.ndarray      # day of week, 0 = Monday
    dwell: np.ndarray    # minutes until the next event, capped
    n_weeks: float

    @property
    def n(self) -> int:
        return len(self.key)

    @classmethod
    def of(cls, events: Sequence[Event]) -> "_Log":
        n = len(events)
        a = np.fromiter((x for e in events for x in (e.order_key, e.location, e.behavior)),
                        dtype=np.int64, count=3 * n).reshape(n, 3)
        key = a[:, 0]
        absday = key // 1440
        span_days = int(absday[-1] - absday[0]) + 1
        dwell = np.minimum(np.diff(key, append=key[-1] + 30), DWELL_CAP).astype(np.float64)
        return cls(key, a[:, 1], a[:, 2], key % 1440, absday, absday % 7, dwell, max(span_days / 7.0, 1.0 / 7.0))


def _home(log: _Log, n_loc: int, generic_locations: frozenset[int]) -> tuple[int, float]:
    """The specific place with the most dwell time, and its share of all dwell time."""
    loc_dwell = np.bincount(log.loc, weights=log.dwell, minlength=n_loc)
    specific = loc_dwell.copy()
    for g in generic_locations:
        specific[g] = 0.0
    home = int(np.argmax(specific if specific.any() else loc_dwell))
    return home, float(loc_dwell[home] / loc_dwell.sum()) if loc_dwell.sum() else 1.0


def _transit_locations(log: _Log, n_loc: int, home: int, beh_group: list[str | None]) -> set[int]:
    """Places (not home) where commute behaviors make up a large share of the events."""
    is_commute = np.array([g == "commute" for g in beh_group], dtype=bool)[log.beh]
    if not is_commute.any():
        return set()
    tot = np.bincount(log.loc, minlength=n_loc)
    com = np.bincount(log.loc[is_commute], minlength=n_loc)
    return {int(li) for li in np.nonzero(tot)[0] if li != home and com[li] / tot[li] >= TRANSIT_MIN_SHARE}


def _workplace(log: _Log, n_loc: int, home: int, excluded: set[int]) -> int | None:
    """The place with the most weekday dwell, visited on enough weekdays for long enough."""
    wk = log.dow < 5
    active_weekdays = len(np.unique(log.absday[wk]))
    if not active_weekdays:
        return None
    workplace, best = None, 0.0
    for li in range(n_loc):
        if li == home or li in excluded:
            continue
        sel = wk & (log.loc == li)
        if not sel.any():
            continue
        days = np.unique(log.absday[sel])
        total = float(log.dwell[sel].sum())
        if len(days) < max(2, WORK_MIN_DAY_SHARE * active_weekdays) or total / len(days) < WORK_MIN_DWELL:
            continue
        if total > best:
            best, workplace = total, li
    return workplace


def _work_hours(log: _Log, workplace: int) -> tuple[int, int, float, bool]:
    """(start minute, end minute, days per week, mostly on weekdays) of the stays at work."""
    key, at = log.key, log.loc == workplace
    # stays: runs of consecutive events at the workplace
    starts = np.nonzero(at & ~np.concatenate([[False], at[:-1]]))[0]
    ends = np.nonzero(at & ~np.concatenate([at[1:], [False]]))[0]
    # a break of under 3 h elsewhere (lunch out) does not end a stay
    ms, me = [int(starts[0])], [int(ends[0])]
    for s_, e_ in zip(starts[1:], ends[1:]):
        if key[s_] - key[me[-1]] < 180:
            me[-1] = int(e_)
        else:
            ms.append(int(s_))
            me.append(int(e_))
    starts, ends = np.array(ms), np.array(me)
    long = (key[ends] - key[starts]) >= 60
    if long.any():
        starts, ends = starts[long], ends[long]
    start = _circ_median(log.minute[starts])[0]
    # a stay ends when the next event happens elsewhere
    end = _circ_median((key[ends] + log.dwell[ends].astype(np.int64)) % 1440)[0]
    return (start, end, len(np.unique(log.absday[starts])) / log.n_weeks,
            bool(np.mean(log.dow[starts] < 5) >= 0.8))


def _hobbies(log: _Log, counts: np.ndarray, n_loc: int, population: PopulationStats,
             beh_group: list[str | None] | None) -> list[Hobby]:
    """Up to 3 leisure behaviors done far more often than the population does, most days-per-week."""
    hobbies: list[Hobby] = []
    for b in range(len(counts)):
        c = int(counts[b])
        if c < HOBBY_MIN_COUNT or (beh_group is not None and beh_group[b] != "leisure"):
            continue
        p = float(population.shares[b])
        if p > HOBBY_MAX_POP_SHARE:
            continue
        lift = (c / log.n) / max(p, 1e-6)
        if lift < HOBBY_MIN_LIFT:
            continue
        sel = log.beh == b
        dpw = len(np.unique(log.absday[sel])) / log.n_weeks
        if dpw < HOBBY_MIN_DAYS_PER_WEEK:
            continue
        med, _ = _circ_median(log.minute[sel])
        top_loc = int(np.bincount(log.loc[sel], minlength=n_loc).argmax())
        hobbies.append(Hobby(b, c, lift, med, top_loc, dpw))
    hobbies.sort(key=lambda h: (-h.lift, h.behavior))
    return hobbies[:3]


def _anchors(log: _Log, counts: np.ndarray, n_loc: int) -> list[Anchor]:
    """Behaviors at regular times of day, most regular first."""
    anchors: list[Anchor] = []
    for b in np.nonzero(counts >= 3)[0]:
        sel = log.beh == b
        per_week = len(np.unique(log.absday[sel])) / log.n_weeks
        if per_week < ANCHOR_MIN_PER_WEEK:
            continue
        med, mad = _circ_median(log.minute[sel])
        if mad > ANCHOR_MAX_MAD:
            continue
        top_loc = int(np.bincount(log.loc[sel], minlength=n_loc).argmax())
        anchors.append(Anchor(int(b), med, top_loc, per_week, mad))
    anchors.sort(key=lambda x: (-(x.per_week / (1.0 + x.mad / 20.0)), x.behavior))
    return anchors


def _top_transition(log: _Log, counts: np.ndarray) -> tuple[int, int] | None:
    """The strongest transition A -> B (A != B) by lift, seen >= 3 times."""
    if log.n <= 3:
        return None
    pairs = Counter(zip(log.beh[:-1].tolist(), log.beh[1:].tolist()))
    best, top = 0.0, None
    for (x, y), c in pairs.items():
        if x == y or c < 3:
            continue
        score = c / counts[x] / (counts[y] / log.n) * np.log1p(c)
        if score > best:
            best, top = score, (int(x), int(y))
    return top


def _sleep(log: _Log) -> tuple[int, int, int, int]:
    """(wake, bed, weekend wake, weekend bed) minutes: the longest gap of each calendar day
    (>= 4 h) separates bed and wake."""
    gaps = np.diff(log.key)
    long_gap = np.nonzero(gaps >= SLEEP_MIN_GAP)[0]
    if not len(long_gap):
        return 7 * 60, 23 * 60, 7 * 60, 23 * 60
    minute, dow = log.minute, log.dow
    # one sleep per start day: the longest gap starting on that day
    best: dict[int, int] = {}
    for i in long_gap:
        d = int(log.absday[i] if minute[i] >= 12 * 60 else log.absday[i] - 1)
        if d not in best or gaps[i] > gaps[best[d]]:
            best[d] = int(i)
    idx = np.array(sorted(best.values()))
    bed = _circ_median(minute[idx])[0]
    wake = _circ_median(minute[idx + 1])[0]
    # weekends (waking on Sat / Sun) separately when there are enough of them
    wk_end = dow[idx + 1] >= 5
    bed_we, wake_we = bed, wake
    if wk_end.sum() >= 2:
        bed_we = _circ_median(minute[idx[wk_end]])[0]
        wake_we = _circ_median(minute[idx[wk_end] + 1])[0]
    if (~wk_end).sum() >= 2:
        bed = _circ_median(minute[idx[~wk_end]])[0]
        wake = _circ_median(minute[idx[~wk_end] + 1])[0]
    return wake, bed, wake_we, bed_we
