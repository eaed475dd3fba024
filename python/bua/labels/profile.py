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
from typing import Sequence

import numpy as np

from bua.events import Event
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
        n = len(events)
        a = np.fromiter((x for e in events for x in (e.order_key, e.location, e.behavior)),
                        dtype=np.int64, count=3 * n).reshape(n, 3)
        key, loc, beh = a[:, 0], a[:, 1], a[:, 2]
        minute = key % 1440
        absday = key // 1440
        dow = absday % 7
        n_loc, n_beh = vocab.n_locations, vocab.n_behaviors
        span_days = int(absday[-1] - absday[0]) + 1
        n_weeks = max(span_days / 7.0, 1.0 / 7.0)

        dwell = np.minimum(np.diff(key, append=key[-1] + 30), DWELL_CAP).astype(np.float64)
        loc_dwell = np.bincount(loc, weights=dwell, minlength=n_loc)
        specific = loc_dwell.copy()
        for g in generic_locations:
            specific[g] = 0.0
        home = int(np.argmax(specific if specific.any() else loc_dwell))
        home_share = float(loc_dwell[home] / loc_dwell.sum()) if loc_dwell.sum() else 1.0

        groups = vocab.behavior_groups or {}
        beh_group = [groups.get(b) for b in vocab.behaviors]
        is_commute = np.array([g == "commute" for g in beh_group], dtype=bool)[beh]
        transit = set()
        if is_commute.any():
            tot = np.bincount(loc, minlength=n_loc)
            com = np.bincount(loc[is_commute], minlength=n_loc)
            for li in np.nonzero(tot)[0]:
                if li != home and com[li] / tot[li] >= TRANSIT_MIN_SHARE:
                    transit.add(int(li))

        # workplace: weekday dwell per (day, location)
        wk = dow < 5
        active_weekdays = len(np.unique(absday[wk]))
        workplace = None
        work_start = work_end = None
        work_dpw = 0.0
        work_weekdays = True
        if active_weekdays:
            best = 0.0
            for li in range(n_loc):
                if li == home or li in transit or li in generic_locations:
                    continue
                sel = wk & (loc == li)
                if not sel.any():
                    continue
                days = np.unique(absday[sel])
                total = float(dwell[sel].sum())
                if len(days) < max(2, WORK_MIN_DAY_SHARE * active_weekdays):
                    continue
                if total / len(days) < WORK_MIN_DWELL:
                    continue
                if total > best:
                    best, workplace = total, li
        if workplace is not None:
            at = loc == workplace
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
            work_start = _circ_median(minute[starts])[0]
            # a stay ends when the next event happens elsewhere
            work_end = _circ_median((key[ends] + dwell[ends].astype(np.int64)) % 1440)[0]
            work_dpw = len(np.unique(absday[starts])) / n_weeks
            work_weekdays = bool(np.mean(dow[starts] < 5) >= 0.8)

        counts = np.bincount(beh, minlength=n_beh)
        total = float(n)
        # hobbies
        hobbies: list[Hobby] = []
        for b in range(n_beh):
            c = int(counts[b])
            if c < HOBBY_MIN_COUNT:
                continue
            if groups and beh_group[b] != "leisure":
                continue
            p = float(population.shares[b])
            if p > HOBBY_MAX_POP_SHARE:
                continue
            lift = (c / total) / max(p, 1e-6)
            if lift < HOBBY_MIN_LIFT:
                continue
            sel = beh == b
            dpw = len(np.unique(absday[sel])) / n_weeks
            if dpw < HOBBY_MIN_DAYS_PER_WEEK:
                continue
            med, _ = _circ_median(minute[sel])
            top_loc = int(np.bincount(loc[sel], minlength=n_loc).argmax())
            hobbies.append(Hobby(b, c, lift, med, top_loc, dpw))
        hobbies.sort(key=lambda h: (-h.lift, h.behavior))
        hobbies = hobbies[:3]

        # anchors: regular times of day
        anchors: list[Anchor] = []
        for b in np.nonzero(counts >= 3)[0]:
            sel = beh == b
            per_week = len(np.unique(absday[sel])) / n_weeks
            if per_week < ANCHOR_MIN_PER_WEEK:
                continue
            med, mad = _circ_median(minute[sel])
            if mad > ANCHOR_MAX_MAD:
                continue
            top_loc = int(np.bincount(loc[sel], minlength=n_loc).argmax())
            anchors.append(Anchor(int(b), med, top_loc, per_week, mad))
        anchors.sort(key=lambda x: (-(x.per_week / (1.0 + x.mad / 20.0)), x.behavior))

        # strongest transition A -> B (A != B) by lift, seen >= 3 times
        top_transition = None
        if n > 3:
            pairs = Counter(zip(beh[:-1].tolist(), beh[1:].tolist()))
            best = 0.0
            for (x, y), c in pairs.items():
                if x == y or c < 3:
                    continue
                lift = c / counts[x] / (counts[y] / total)
                score = lift * np.log1p(c)
                if score > best:
                    best, top_transition = score, (int(x), int(y))

        # sleep: the longest gap of each calendar day (>= 4 h) separates bed and wake
        gaps = np.diff(key)
        long_gap = np.nonzero(gaps >= SLEEP_MIN_GAP)[0]
        if len(long_gap):
            # one sleep per start day: the longest gap starting on that day
            best: dict[int, int] = {}
            for i in long_gap:
                d = int(absday[i] if minute[i] >= 12 * 60 else absday[i] - 1)
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
        else:
            bed, wake = 23 * 60, 7 * 60
            bed_we, wake_we = bed, wake
        prof = cls(vocab, n, n_weeks, home, home_share, workplace, work_start, work_end,
                   work_dpw, work_weekdays, frozenset(transit), counts, tuple(hobbies),
                   tuple(anchors[:6]), top_transition, wake, bed, wake_we, bed_we)
        prof._extra["loc"] = loc
        prof._extra["beh"] = beh
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
                rhythm = "night-shift worker"
            elif groups and study > 0.4 * len(at_work):
                rhythm = "student with a fixed class schedule"
            else:
                rhythm = "commuter with fixed working hours" if self.transit else \
                    "worker with fixed working hours"
        elif group_share.get("work", 0.0) >= 0.15:
            rhythm = "home-based worker"
        else:
            rhythm = "home-centered person without fixed work hours"

        # interest: a hobby first, else the group most above the population
        if self.hobbies:
            interest = _HOBBY_TRAIT.get(v.behaviors[self.hobbies[0].behavior],
                                        f"{v.behaviors[self.hobbies[0].behavior]}-loving")
        else:
            best_g, best_lift = None, 1.2
            for g, s in group_share.items():
                if g not in _GROUP_TRAIT:
                    continue
                lift = s / max(population.group_shares.get(g, 0.0), 1e-6)
                if lift > best_lift:
                    best_g, best_lift = g, lift
            interest = _GROUP_TRAIT[best_g] if best_g else "routine-driven"
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
            habits.append(f"{name[h.behavior]} {_part_of_day(h.minute)} at "
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


def _part_of_day(minute: int) -> str:
    h = minute // 60
    if 5 <= h < 12:
        return "in the morning"
    if 12 <= h < 17:
        return "in the afternoon"
    if 17 <= h < 22:
        return "in the evening"
    return "late at night"
