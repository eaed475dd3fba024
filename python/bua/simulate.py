"""A deterministic daily-life simulator: the embedded default dataset.

`simulate(n_users, n_days, seed)` returns a `Dataset` of phone-usage style behavior logs at
the granularity of the paper's App. O (alarm clock, check weather, subway, watch news,
payment, editing video, online meeting, ordering takeout, watching video, online shopping,
gaming, ...): 37 behavior types in 9 groups, 10 place types (home, work, school, transit, gym,
mall, restaurant, park, cafe, relatives).

Each user has a persona (office worker, student, shift worker, parent, retiree, freelancer)
and personal parameters drawn from the seed: wake and bed times, commute mode, duration and
the media used on the way, lunch style, 1-3 hobbies with their time, place and days per
week, and a noise level. A day is a sequence of phases (the scenes of `bua.scenes`:
morning routine, morning commute, working hours, lunch break, evening commute, evening
leisure, pre-bedtime, night shift, outing, home leisure) that differ between weekdays and
weekends and by persona; each phase emits anchor events (alarm clock on waking, the commute
mode when leaving, sleep tracking at bedtime, ...) and Poisson-many events drawn from its
behavior mix. Noise events of any behavior, sick days, skipped anchors and time jitter keep
it from being too regular. The behavior frequencies have a real long tail: with the default
sizes the App. C.1 head, medium and tail classes are all populated.

Every `UserHistory.traits` holds the ground truth (persona, home, workplace, hobbies, habits,
key transitions); ``with_scenes=True`` also stores the scene of every event in
``dataset.info["scenes"][user_id]`` (aligned with the user's events).

Only the standard library's `random` is used (seeded per user), so results are identical
across platforms and numpy versions.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from bua import scenes
from bua.events import MINUTES_PER_DAY, MINUTES_PER_WEEK, Dataset, Event, UserHistory, UserTraits
from bua.vocab import Vocabulary

__all__ = ["BEHAVIOR_GROUPS", "BEHAVIORS", "HOBBY_BEHAVIORS", "LOCATIONS", "PERSONAS",
           "simulate", "simulator_vocabulary"]

BEHAVIOR_GROUPS: dict[str, str] = {
    # routine
    "alarm clock": "routine", "check weather": "routine", "sleep tracking": "routine",
    # information
    "watch news": "info", "reading articles": "info", "stock trading": "info",
    # commute
    "subway": "commute", "bus": "commute", "ride hailing": "commute", "bike sharing": "commute",
    "navigation": "commute",
    # errands
    "payment": "errand", "parcel tracking": "errand", "grocery shopping": "errand",
    # work
    "online meeting": "work", "editing documents": "work", "editing video": "work",
    "email": "work", "work chat": "work",
    # study
    "online class": "study", "language learning": "study", "taking notes": "study",
    # meals
    "ordering takeout": "meal", "restaurant booking": "meal", "cooking recipes": "meal",
    # leisure
    "watching video": "leisure", "short videos": "leisure", "gaming": "leisure",
    "online shopping": "leisure", "music": "leisure", "reading ebooks": "leisure",
    "fitness tracking": "leisure", "social media": "leisure", "live streaming": "leisure",
    "photography": "leisure",
    # social
    "messaging": "social", "video call": "social",
}
BEHAVIORS: tuple[str, ...] = tuple(BEHAVIOR_GROUPS)
LOCATIONS: tuple[str, ...] = ("home", "work", "school", "transit", "gym", "mall", "restaurant",
                              "park", "cafe", "relatives")
PERSONAS: tuple[str, ...] = ("office worker", "student", "shift worker", "parent", "retiree",
                             "freelancer")
_PERSONA_WEIGHTS = (0.30, 0.18, 0.10, 0.15, 0.12, 0.15)
HOBBY_BEHAVIORS: tuple[str, ...] = ("gaming", "music", "reading ebooks", "fitness tracking",
                                    "live streaming", "photography", "online shopping")
# hobby -> (where, preferred minute of day, kind): kind "home" hobbies happen in the evening
# at home, "out" hobbies are a trip to their place (evenings or weekend daytime)
_HOBBY_SPEC = {
    "gaming": ("home", 21 * 60, "home"),
    "music": ("home", 20 * 60, "home"),
    "reading ebooks": ("home", 22 * 60 + 30, "home"),
    "live streaming": ("home", 21 * 60 + 30, "home"),
    "online shopping": ("home", 20 * 60 + 30, "home"),
    "fitness tracking": ("gym", 19 * 60, "out"),
    "photography": ("park", 15 * 60, "out"),
}
_PERSONA_HOBBIES = {
    "office worker": {"gaming": 3, "music": 2, "reading ebooks": 1, "fitness tracking": 3,
                      "live streaming": 1, "photography": 1, "online shopping": 2},
    "student": {"gaming": 5, "music": 3, "reading ebooks": 1, "fitness tracking": 1,
                "live streaming": 3, "photography": 1, "online shopping": 1},
    "shift worker": {"gaming": 3, "music": 2, "reading ebooks": 1, "fitness tracking": 2,
                     "live streaming": 2, "photography": 1, "online shopping": 2},
    "parent": {"gaming": 1, "music": 1, "reading ebooks": 2, "fitness tracking": 2,
               "live streaming": 1, "photography": 2, "online shopping": 4},
    "retiree": {"gaming": 0.3, "music": 2, "reading ebooks": 3, "fitness tracking": 2,
                "live streaming": 0.5, "photography": 3, "online shopping": 1},
    "freelancer": {"gaming": 2, "music": 3, "reading ebooks": 2, "fitness tracking": 2,
                   "live streaming": 2, "photography": 3, "online shopping": 1},
}
_COMMUTE_MEDIA = ("watch news", "short videos", "music", "reading articles", "watching video")


def simulator_vocabulary() -> Vocabulary:
    return Vocabulary(list(BEHAVIORS), list(LOCATIONS), dict(BEHAVIOR_GROUPS))


_B = {name: i for i, name in enumerate(BEHAVIORS)}
_L = {name: i for i, name in enumerate(LOCATIONS)}


@dataclass
class _Mix:
    """A phase's behavior mix as cumulative weights for random.choices."""

    ids: list[int]
    cum: list[float]

    @classmethod
    def of(cls, weights: dict[str, float]) -> "_Mix":
        ids, cum, total = [], [], 0.0
        for name, w in weights.items():
            if w > 0:
                total += w
                ids.append(_B[name])
                cum.append(total)
        return cls(ids, cum)


@dataclass
class _User:
    uid: str
    persona: str
    rng: random.Random
    wake: int
    bed: int                 # minutes after the day's midnight (may exceed 1440)
    commute_mode: str | None
    commute_len: int
    commute_media: str
    work_start: int
    work_end: int
    workplace: str | None
    lunch_takeout: bool
    weather_habit: bool
    sleep_habit: bool
    news_morning: bool
    work_anchor: str | None
    hobbies: list[str]
    hobby_days: dict[str, float]
    outing_place: str
    noise: float
    mixes: dict[str, _Mix] = field(default_factory=dict)


def _make_user(uid: str, persona: str, rng: random.Random) -> _User:
    g = rng.gauss
    commute_mode = rng.choices(["subway", "bus", "ride hailing", "bike sharing"],
                               [5, 3, 1.2, 1])[0]
    media = rng.choice(_COMMUTE_MEDIA)
    pool = _PERSONA_HOBBIES[persona]
    n_hobbies = rng.choices([1, 2, 3], [3, 5, 2])[0]
    hobbies: list[str] = []
    names, weights = list(pool), list(pool.values())
    while len(hobbies) < n_hobbies:
        h = rng.choices(names, weights)[0]
        if h not in hobbies:
            hobbies.append(h)
    hobby_days = {h: rng.uniform(0.45, 0.8) for h in hobbies}
    if persona == "office worker":
        wake, bed, ws, we, wp = 6 * 60 + 30 + rng.randrange(60), 23 * 60 + rng.randrange(60), \
            9 * 60 + rng.randrange(-30, 31), 18 * 60 + rng.randrange(-30, 61), "work"
    elif persona == "student":
        wake, bed, ws, we, wp = 7 * 60 + rng.randrange(75), 23 * 60 + 30 + rng.randrange(75), \
            8 * 60 + 30 + rng.randrange(-15, 31), 16 * 60 + rng.randrange(0, 91), "school"
        commute_mode = rng.choices(["subway", "bus", "bike sharing"], [3, 4, 2])[0]
    elif persona == "shift worker":
        wake, bed, ws, we, wp = 13 * 60 + 30 + rng.randrange(60), 7 * 60 + 30, \
            22 * 60, 30 * 60, "work"
    elif persona == "parent":
        wake, bed, ws, we, wp = 6 * 60 + rng.randrange(40), 22 * 60 + 30 + rng.randrange(45), \
            9 * 60 + rng.randrange(0, 31), 15 * 60 + rng.randrange(0, 61), "work"
        commute_mode = rng.choices(["subway", "bus", "ride hailing"], [2, 2, 2])[0]
    elif persona == "retiree":
        wake, bed, ws, we, wp = 5 * 60 + 45 + rng.randrange(60), 21 * 60 + 45 + rng.randrange(60),\
            0, 0, None
        commute_mode = None
        media = "watch news"
    else:  # freelancer
        wake, bed, ws, we, wp = 8 * 60 + 30 + rng.randrange(90), 24 * 60 + 30 + rng.randrange(60), \
            10 * 60 + 30 + rng.randrange(0, 46), 18 * 60 + rng.randrange(0, 61), None
        commute_mode = None
    work_anchor = {"office worker": rng.choice(["email", "work chat", "online meeting"]),
                   "student": "online class", "shift worker": "work chat",
                   "parent": rng.choice(["email", "work chat"]),
                   "freelancer": rng.choice(["email", "editing video"])}.get(persona)
    u = _User(
        uid=uid, persona=persona, rng=rng, wake=wake, bed=bed, commute_mode=commute_mode,
        commute_len=max(15, int(g(40, 10))), commute_media=media, work_start=ws, work_end=we,
        workplace=wp, lunch_takeout=rng.random() < 0.6, weather_habit=rng.random() < 0.7,
        sleep_habit=rng.random() < 0.5, news_morning=rng.random() < 0.5,
        work_anchor=work_anchor, hobbies=hobbies, hobby_days=hobby_days,
        outing_place=rng.choice(["mall", "park", "cafe", "relatives"]),
        noise=rng.uniform(0.02, 0.08),
    )
    u.mixes = _mixes(u)
    return u


def _mixes(u: _User) -> dict[str, _Mix]:
    p = u.persona
    m: dict[str, dict[str, float]] = {}
    m["morning"] = {"watch news": 3 if u.news_morning else 0.6, "messaging": 1.5,
                    "short videos": 1.2, "social media": 1, "music": 0.3,
                    "cooking recipes": 3 if p == "parent" else 0.2, "check weather": 0.3,
                    "reading articles": 1.5 if p == "retiree" else 0.2}
    m["commute"] = {u.commute_media: 5, "short videos": 1, "messaging": 1, "music": 0.8,
                    "social media": 0.8, "online shopping": 0.2}
    if p == "student":
        m["work"] = {"online class": 4, "taking notes": 3, "language learning": 1,
                     "social media": 1, "short videos": 1, "messaging": 1}
    elif p == "freelancer":
        main = u.rng.choice(["editing video", "editing documents"])
        m["work"] = {main: 5, "email": 2, "online meeting": 1, "work chat": 1, "music": 1.2,
                     "messaging": 0.6, "stock trading": 0.2}
    elif p == "shift worker":
        m["work"] = {"work chat": 2, "messaging": 2, "short videos": 2, "watching video": 1,
                     "ordering takeout": 0.5, "email": 0.4}
    elif p == "parent":
        m["work"] = {"email": 2, "editing documents": 2, "work chat": 2, "messaging": 2,
                     "parcel tracking": 0.3}
    else:
        creative = u.rng.random() < 0.25
        m["work"] = {"online meeting": 3, "editing documents": 2 if creative else 3,
                     "editing video": 3 if creative else 0.05, "email": 3, "work chat": 3,
                     "messaging": 0.5, "short videos": 0.3}
    m["lunch"] = {"ordering takeout": 4 if u.lunch_takeout else 0.5,
                  "payment": 1 if u.lunch_takeout else 3, "restaurant booking": 0.15,
                  "watching video": 2, "short videos": 2, "social media": 1,
                  "online shopping": 0.5}
    m["evening_commute"] = {"watching video": 3, "short videos": 2, "music": 1,
                            "messaging": 1, "online shopping": 0.5}
    m["evening"] = {"watching video": 3, "online shopping": 1, "gaming": 0.4,
                    "short videos": 2, "social media": 1.5, "messaging": 1,
                    "cooking recipes": 2 if p == "parent" else 0.4,
                    "ordering takeout": 0.5, "video call": 1 if p == "parent" else 0.2,
                    "watch news": 1.5 if p == "retiree" else 0.2, "grocery shopping": 0.2}
    m["bedtime"] = {"short videos": 3, "social media": 2, "reading ebooks": 0.3, "music": 0.4,
                    "messaging": 0.8, "watching video": 1}
    m["outing"] = {"payment": 2.5, "grocery shopping": 1.5, "restaurant booking": 0.2,
                   "social media": 1, "messaging": 1, "photography": 0.15, "navigation": 0.6,
                   "short videos": 0.5, "video call": 0.1}
    m["home_day"] = {"watching video": 3, "cooking recipes": 1, "video call": 0.6,
                     "reading articles": 1.2 if p == "retiree" else 0.3,
                     "stock trading": 0.5 if p == "retiree" else 0.05,
                     "watch news": 2 if p == "retiree" else 0.3, "parcel tracking": 0.2,
                     "grocery shopping": 0.3, "gaming": 0.2, "short videos": 1,
                     "social media": 0.8, "messaging": 1, "online shopping": 0.5}
    return {k: _Mix.of(v) for k, v in m.items()}


_RATE = 0.6  # global events-per-hour scale of the phases (about 30 events a day)

# noise: any behavior, flatter than the phases' mixes (tail behaviors get a few events)
_NOISE = _Mix.of({b: (0.3 if BEHAVIOR_GROUPS[b] in ("work", "study") else 1.0) for b in BEHAVIORS})


class _Day:
    """Collects one simulated day's events as (minute since the day's midnight, loc, beh,
    scene); minutes past 1440 belong to the next day."""

    def __init__(self, u: _User):
        self.u = u
        self.rows: list[tuple[int, int, int, str]] = []

    def anchor(self, t: int, loc: str, beh: str, scene: str, p: float = 1.0) -> None:
        if p >= 1.0 or self.u.rng.random() < p:
            self.rows.append((t, _L[loc], _B[beh], scene))

    def phase(self, start: int, end: int, loc: str, mix: str, rate: float, scene: str) -> None:
        if end <= start:
            return
        rng = self.u.rng
        lam = _RATE * rate * (end - start) / 60.0
        n = int(lam) + (1 if rng.random() < lam - int(lam) else 0)
        if n == 0:
            return
        mx = self.u.mixes[mix]
        behs = rng.choices(mx.ids, cum_weights=mx.cum, k=n)
        li = _L[loc]
        span = end - start
        for b in behs:
            self.rows.append((start + int(rng.random() * span), li, b, scene))

    def hobby(self, h: str, t: int, scene: str) -> None:
        rng = self.u.rng
        loc = _HOBBY_SPEC[h][0]
        for _ in range(rng.choice((2, 2, 3, 4))):
            self.rows.append((t + rng.randrange(0, 50), _L[loc], _B[h], scene))


def _jit(rng: random.Random, sd: float) -> int:
    return int(rng.gauss(0.0, sd))


def _commute(d: _Day, t: int, scene: str) -> int:
    u, rng = d.u, d.u.rng
    length = max(10, u.commute_len + _jit(rng, 5))
    d.anchor(t, "transit", u.commute_mode, scene)
    if u.commute_mode in ("subway", "bus"):
        d.anchor(t + rng.randrange(0, 3), "transit", "payment", scene, 0.7)
    elif u.commute_mode == "ride hailing":
        d.anchor(t + 1, "transit", "navigation", scene, 0.5)
    mix = "commute" if scene == scenes.MORNING_COMMUTE else "evening_commute"
    d.phase(t + 2, t + length, "transit", mix, 4.0, scene)
    return t + length


def _home_hobbies(d: _Day, start: int, end: int, weekend: bool, pre: int) -> None:
    """Home hobbies on their days, near their preferred time (`pre`: pre-bedtime start)."""
    u, rng = d.u, d.u.rng
    for h in u.hobbies:
        if _HOBBY_SPEC[h][2] != "home" or rng.random() > u.hobby_days[h]:
            continue
        t = _HOBBY_SPEC[h][1] + _jit(rng, 20)
        if weekend and rng.random() < 0.3:
            t -= 5 * 60
        t = min(max(t, start), end - 30)
        if t >= start:
            d.hobby(h, t, scenes.PRE_BEDTIME if t >= pre else
                    (scenes.EVENING_LEISURE if t >= 17 * 60 else scenes.HOME_LEISURE))


def _evening(d: _Day, start: int, bed: int, weekend: bool) -> None:
    """Evening leisure (with an 'out' hobby trip on its days) and pre-bedtime at home."""
    u, rng = d.u, d.u.rng
    t = start
    for h in u.hobbies:
        loc, pref, kind = _HOBBY_SPEC[h]
        if kind != "out" or h == "photography" or rng.random() > u.hobby_days[h]:
            continue
        go = max(t, pref + _jit(rng, 20))
        if go + 90 > bed - 60:
            continue
        d.phase(t, go, "home", "evening", 3.0, scenes.EVENING_LEISURE)
        d.anchor(go, loc, h, scenes.EVENING_LEISURE)
        d.hobby(h, go + 5, scenes.EVENING_LEISURE)
        d.phase(go + 5, go + 80, loc, "bedtime", 1.0, scenes.EVENING_LEISURE)
        t = go + 90
    pre = bed - 45
    d.phase(t, pre, "home", "evening", 3.0, scenes.EVENING_LEISURE)
    _home_hobbies(d, start, bed, weekend, pre)
    d.phase(max(pre, t), bed, "home", "bedtime", 3.5, scenes.PRE_BEDTIME)
    d.anchor(bed, "home", "sleep tracking", scenes.PRE_BEDTIME, 0.85 if u.sleep_habit else 0.03)


def _morning(d: _Day, wake: int, until: int, p_alarm: float) -> None:
    u, rng = d.u, d.u.rng
    d.anchor(wake, "home", "alarm clock", scenes.MORNING_ROUTINE, p_alarm)
    if u.weather_habit:
        d.anchor(wake + 1 + rng.randrange(4), "home", "check weather", scenes.MORNING_ROUTINE, 0.85)
    d.phase(wake + 3, until, "home", "morning", 3.0, scenes.MORNING_ROUTINE)


def _outing(d: _Day, start: int, end: int, place: str) -> None:
    u, rng = d.u, d.u.rng
    if place != "relatives" and rng.random() < 0.5:
        d.anchor(start, place, "navigation", scenes.OUTING)
    d.phase(start + 2, end, place, "outing", 2.5, scenes.OUTING)
    if "photography" in u.hobbies and place == "park":
        d.hobby("photography", start + 20, scenes.OUTING)


def _workday(d: _Day, u: _User) -> None:
    rng = d.u.rng
    wake = u.wake + _jit(rng, 10)
    if u.persona == "shift worker":
        # sleeps in the morning after the night shift; afternoon at home, shift 22:00-06:00
        _morning(d, wake, wake + 40, 0.9)
        d.phase(wake + 40, 20 * 60, "home", "home_day", 2.0, scenes.HOME_LEISURE)
        _home_hobbies(d, wake + 40, 20 * 60 + 30, False, 24 * 60)
        d.phase(20 * 60, 21 * 60, "home", "evening", 2.5, scenes.EVENING_LEISURE)
        arrive = _commute(d, 21 * 60 + 10 + _jit(rng, 5), scenes.EVENING_COMMUTE)
        d.anchor(arrive + 2, "work", u.work_anchor, scenes.NIGHT_SHIFT, 0.7)
        d.phase(arrive + 3, 30 * 60, "work", "work", 1.5, scenes.NIGHT_SHIFT)
        home = _commute(d, 30 * 60 + 5, scenes.MORNING_COMMUTE)
        d.phase(home, home + 40, "home", "bedtime", 3.0, scenes.PRE_BEDTIME)
        d.anchor(home + 45, "home", "sleep tracking", scenes.PRE_BEDTIME,
                 0.85 if u.sleep_habit else 0.03)
        return
    if u.workplace is None:  # freelancer: works from home, sometimes from a cafe
        _morning(d, wake, wake + 60, 0.5)
        place = "cafe" if rng.random() < 0.15 else "home"
        ws, we = u.work_start + _jit(rng, 15), u.work_end + _jit(rng, 20)
        d.anchor(ws, place, u.work_anchor, scenes.WORKING_HOURS, 0.7)
        d.phase(ws + 2, 13 * 60, place, "work", 2.5, scenes.WORKING_HOURS)
        d.phase(13 * 60, 14 * 60, "home", "lunch", 3.0, scenes.LUNCH_BREAK)
        d.phase(14 * 60, we, place, "work", 2.5, scenes.WORKING_HOURS)
        _evening(d, we, u.bed + _jit(rng, 20), False)
        return
    leave = u.work_start - u.commute_len - 10 + _jit(rng, 8)
    _morning(d, wake, leave, 0.95)
    arrive = _commute(d, leave, scenes.MORNING_COMMUTE)
    wp = u.workplace
    d.anchor(arrive + 3, wp, u.work_anchor, scenes.WORKING_HOURS, 0.75)
    lunch = 12 * 60 + _jit(rng, 10)
    d.phase(arrive + 4, lunch, wp, "work", 2.5, scenes.WORKING_HOURS)
    lunch_loc = wp if (u.lunch_takeout or u.persona == "student") else "restaurant"
    d.phase(lunch, lunch + 60, lunch_loc, "lunch", 3.5, scenes.LUNCH_BREAK)
    end = u.work_end + _jit(rng, 20)
    d.phase(lunch + 60, end, wp, "work", 2.5, scenes.WORKING_HOURS)
    home = _commute(d, end + 2, scenes.EVENING_COMMUTE)
    if u.persona == "parent" and rng.random() < 0.4:
        d.phase(home, home + 60, "mall", "outing", 2.5, scenes.OUTING)
        home += 70
    _evening(d, home, u.bed + _jit(rng, 20), False)


def _home_day(d: _Day, u: _User, weekend: bool) -> None:
    """Weekends, retirees' days and sick days."""
    rng = d.u.rng
    late = 90 if weekend and u.persona not in ("retiree", "parent") else 0
    wake = u.wake + late + _jit(rng, 20)
    if u.persona == "shift worker":
        wake = 11 * 60 + _jit(rng, 30)
    _morning(d, wake, wake + 60, 0.4 if weekend else 0.9)
    t = wake + 60
    bed = u.bed + (45 if weekend and u.persona != "retiree" else 0) + _jit(rng, 20)
    if u.persona == "shift worker":
        bed = max(bed, 25 * 60)
    p_out = 0.9 if u.persona == "retiree" else (0.6 if weekend else 0.2)
    if rng.random() < p_out:
        if u.persona == "retiree":
            go = max(t, 8 * 60 + _jit(rng, 20))
            place = "park" if rng.random() < 0.6 else u.outing_place
        else:
            go = max(t, 13 * 60 + _jit(rng, 60))
            place = u.outing_place if rng.random() < 0.7 else rng.choice(
                ["mall", "park", "cafe", "relatives", "restaurant"])
        if "photography" in u.hobbies and rng.random() < u.hobby_days["photography"]:
            place = "park"
        d.phase(t, go, "home", "home_day", 2.0, scenes.HOME_LEISURE)
        back = go + 90 + rng.randrange(0, 90)
        _outing(d, go, back, place)
        t = back
    d.phase(t, 17 * 60, "home", "home_day", 2.0, scenes.HOME_LEISURE)
    _evening(d, max(t, 17 * 60), bed, weekend)


def _simulate_user(uid: str, persona: str, seed: int, n_days: int, with_scenes: bool):
    rng = random.Random(seed)
    u = _make_user(uid, persona, rng)
    rows: list[tuple[int, int, int, str]] = []
    horizon = n_days * MINUTES_PER_DAY
    for day in range(n_days):
        dow = day % 7
        d = _Day(u)
        weekend = dow >= 5
        if u.persona == "retiree":
            _home_day(d, u, weekend)
        elif weekend or rng.random() < 0.04:  # weekend, or a sick day / day off
            _home_day(d, u, weekend)
        else:
            _workday(d, u)
        # noise: a few events of any behavior at a place of the day
        if d.rows:
            lam = u.noise * len(d.rows)
            k = int(lam) + (1 if rng.random() < lam - int(lam) else 0)
            for b in rng.choices(_NOISE.ids, cum_weights=_NOISE.cum, k=k):
                t, li, _, sc = d.rows[rng.randrange(len(d.rows))]
                rows.append((day * MINUTES_PER_DAY + t + rng.randrange(-20, 21), li, b, sc))
        base = day * MINUTES_PER_DAY
        rows.extend((base + t, li, b, sc) for t, li, b, sc in d.rows)
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    events: list[Event] = []
    scenes: list[str] = []
    last = None
    for t, li, b, sc in rows:
        if t < 0 or t >= horizon or (t, li, b) == last:
            continue
        last = (t, li, b)
        events.append(Event((t // MINUTES_PER_DAY) % 7, t % MINUTES_PER_DAY, li, b,
                            t // MINUTES_PER_WEEK))
        if with_scenes:
            scenes.append(sc)
    return u, events, scenes


def _traits(u: _User) -> UserTraits:
    habits = []
    if u.commute_mode:
        habits.append(f"commutes by {u.commute_mode}")
        habits.append(f"{u.commute_media} on the commute")
    if u.weather_habit:
        habits.append("checks the weather right after waking")
    if u.persona != "retiree" and u.workplace is not None and u.persona != "shift worker":
        habits.append("orders takeout for lunch" if u.lunch_takeout else "eats lunch out")
    if u.sleep_habit:
        habits.append("tracks sleep at bedtime")
    if u.news_morning:
        habits.append("watches news in the morning")
    if u.persona == "shift worker":
        habits.append("works night shifts")
    if u.workplace is None and u.persona == "freelancer":
        habits.append("works from home")
    trans = []
    if u.weather_habit:
        trans.append((_B["alarm clock"], _B["check weather"]))
    if u.commute_mode and u.work_anchor:
        trans.append((_B[u.commute_mode], _B[u.work_anchor]))
    if u.sleep_habit:
        trans.append((_B["short videos"], _B["sleep tracking"]))
    return UserTraits(
        persona=u.persona, home=_L["home"],
        workplace=None if u.workplace is None else _L[u.workplace],
        hobbies=tuple(sorted(_B[h] for h in u.hobbies)), habits=tuple(habits),
        key_transitions=tuple(trans))


def simulate(n_users: int = 300, n_days: int = 28, seed: int = 0, *,
             with_scenes: bool = False, name: str | None = None) -> Dataset:
    """Simulates `n_users` users over `n_days` days (starting on a Monday, week 0).

    Deterministic by `seed`; user k's log depends only on (seed, k), so a larger
    `n_users` extends a smaller run.
    """
    if n_users <= 0 or n_days <= 0:
        raise ValueError(f"n_users and n_days must be positive (got {n_users}, {n_days})")
    vocab = simulator_vocabulary()
    master = random.Random(seed)
    users, scenes = [], {}
    width = max(4, len(str(n_users - 1)))
    for k in range(n_users):
        user_seed = master.getrandbits(63)
        uid = f"sim{k:0{width}d}"
        persona = random.Random(user_seed ^ 0x5EED).choices(PERSONAS, _PERSONA_WEIGHTS)[0]
        u, events, sc = _simulate_user(uid, persona, user_seed, n_days, with_scenes)
        users.append(UserHistory(uid, tuple(events), _traits(u)))
        if with_scenes:
            scenes[uid] = tuple(sc)
    info = {"source": "bua.simulate", "n_users": n_users, "n_days": n_days, "seed": seed}
    if with_scenes:
        info["scenes"] = scenes
    return Dataset(name or f"simulated(seed={seed})", vocab, tuple(users), info)
