"""Behavior events, user histories and datasets (paper sec. 3.1: the four-tuple (d, t, l, b)).

An `Event` is one behavior at one place and time:

    Event(day, minute, location, behavior, week=0)

`day` is 0 = Monday .. 6 = Sunday, `minute` the minute of the day (0..1439), `location` and
`behavior` dense ids into a `bua.vocab.Vocabulary`, and `week` the week index inside the
user's log, which orders events across weeks (`Event.order_key`).

Validation (`validate_events`, `Dataset(..., validate=True)`) raises `DataError`, whose
message names the source (file or user), the row, the field and the bad value.

Only numpy is needed here.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from bua.vocab import Vocabulary

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DAY_ABBRS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

__all__ = [
    "DAY_ABBRS",
    "DAY_NAMES",
    "DataError",
    "Dataset",
    "Event",
    "MINUTES_PER_DAY",
    "MINUTES_PER_WEEK",
    "UserHistory",
    "UserTraits",
    "events_from_array",
    "events_to_array",
    "events_to_batch",
    "validate_events",
]


class DataError(ValueError):
    """Bad input data. The message names the source, the row, the field and the value.

    Attributes keep the parts for programs: `source` (file name or ``user <id>``), `row`
    (0-based index inside the source, or None), `field` (column / attribute name, or None),
    `value` (the offending value) and `reason`.
    """

    def __init__(self, source: str, reason: str, *, row: int | None = None,
                 field: str | None = None, value: object = None, has_value: bool = True):
        self.source = source
        self.row = row
        self.field = field
        self.value = value
        self.reason = reason
        parts = [str(source)]
        if row is not None:
            parts.append(f"row {row}")
        if field is not None:
            parts.append(f"field '{field}'")
        msg = ": ".join(parts) + f": {reason}"
        if has_value:
            msg += f" (got {value!r})"
        super().__init__(msg)


EVENT_FIELDS = ("day", "minute", "location", "behavior", "week")


@dataclass(frozen=True, slots=True)
class Event:
    """One behavior event: (day of week, minute of day, location id, behavior id, week)."""

    day: int
    minute: int
    location: int
    behavior: int
    week: int = 0

    def __post_init__(self) -> None:
        # Ranges depend on a vocabulary (validate_events checks them); types never do.
        for name in EVENT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise DataError("Event", "must be an integer", field=name, value=value)

    @property
    def order_key(self) -> int:
        """Absolute minute inside the user's log: ``week*10080 + day*1440 + minute``."""
        return self.week * MINUTES_PER_WEEK + self.day * MINUTES_PER_DAY + self.minute

    abs_minute = order_key

    @property
    def abs_day(self) -> int:
        """Calendar day index inside the user's log: ``week*7 + day``."""
        return self.week * 7 + self.day


@dataclass(frozen=True)
class UserTraits:
    """Ground truth about a user, known for simulated users (`bua.simulate`).

    Ids refer to the dataset's `Vocabulary`. `workplace` is None for users without a fixed
    place of work or study (retirees, freelancers working from home). `key_transitions` are
    (behavior before, behavior after) pairs that mark a change of daily phase.
    """

    persona: str
    home: int
    workplace: int | None = None
    hobbies: tuple[int, ...] = ()
    habits: tuple[str, ...] = ()
    key_transitions: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hobbies"] = list(self.hobbies)
        d["habits"] = list(self.habits)
        d["key_transitions"] = [list(t) for t in self.key_transitions]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UserTraits":
        return cls(
            persona=str(d["persona"]),
            home=int(d["home"]),
            workplace=None if d.get("workplace") is None else int(d["workplace"]),
            hobbies=tuple(int(x) for x in d.get("hobbies", ())),
            habits=tuple(str(x) for x in d.get("habits", ())),
            key_transitions=tuple((int(a), int(b)) for a, b in d.get("key_transitions", ())),
        )


@dataclass(frozen=True)
class UserHistory:
    """One user's events in time order (``order_key`` non-decreasing)."""

    user_id: str
    events: tuple[Event, ...]
    traits: UserTraits | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.events, tuple):
            object.__setattr__(self, "events", tuple(self.events))

    def __len__(self) -> int:
        return len(self.events)

    def to_array(self) -> np.ndarray:
        return events_to_array(self.events)


_ARRAY_COLUMNS = ("day", "minute", "location", "behavior")


def events_to_array(events: Sequence[Event], *, with_week: bool = False) -> np.ndarray:
    """Events -> int64 array [L, 4] with columns (day, minute, location, behavior).

    With ``with_week=True`` a fifth column holds the week.
    """
    n = 5 if with_week else 4
    if len(events) == 0:
        return np.zeros((0, n), dtype=np.int64)
    if with_week:
        rows = [(e.day, e.minute, e.location, e.behavior, e.week) for e in events]
    else:
        rows = [(e.day, e.minute, e.location, e.behavior) for e in events]
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), n)


def events_from_array(array: np.ndarray, week: int | Sequence[int] = 0) -> list[Event]:
    """Inverse of `events_to_array` (4 columns, plus an optional 5th week column)."""
    a = np.asarray(array, dtype=np.int64)
    if a.ndim != 2 or a.shape[1] not in (4, 5):
        raise ValueError(f"expected an int array [L, 4] or [L, 5], got shape {a.shape}")
    if a.shape[1] == 5:
        return [Event(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in a]
    weeks = [week] * len(a) if isinstance(week, int) else list(week)
    return [Event(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(w)) for r, w in zip(a, weeks)]


def history_array(item) -> np.ndarray:
    """One history as int64 [L, 4]: from a `UserHistory`, a sequence of `Event`s or an int array
    [L, 4] (a 5th week column is dropped)."""
    if isinstance(item, np.ndarray):
        return np.asarray(item, dtype=np.int64)[:, :4]
    return events_to_array(item.events if isinstance(item, UserHistory) else item)


def events_to_batch(histories: Sequence, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch of event sequences -> (events int64 [B, L, 4], mask bool [B, L]).

    Each item is a `UserHistory`, a sequence of `Event`s or an int array [n, 4]. Keeps the
    LAST `max_len` events of each, right-padded with zeros (mask False); L is the longest
    kept length (at most `max_len`).
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    arrays = []
    for item in histories:
        arrays.append(history_array(item)[-max_len:])
    length = max((len(a) for a in arrays), default=0)
    out = np.zeros((len(arrays), length, 4), dtype=np.int64)
    mask = np.zeros((len(arrays), length), dtype=bool)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
        mask[i, : len(a)] = True
    return out, mask


def validate_events(events: Sequence[Event], vocab: "Vocabulary | None" = None, *,
                    source: str = "events", allow_empty: bool = False) -> None:
    """Checks one user's events; raises `DataError` on the first problem found.

    Checks: non-empty (unless `allow_empty`), integer fields, day in 0..6, minute in 0..1439,
    week >= 0, location / behavior ids known to `vocab` (when given), time order
    (``order_key`` non-decreasing) and no duplicate events (same time, place and behavior).
    """
    n = len(events)
    if n == 0:
        if allow_empty:
            return
        raise DataError(source, "empty event sequence", field="events", value=[], has_value=False)
    for i, e in enumerate(events):
        if not isinstance(e, Event):
            raise DataError(source, "not an Event", row=i, value=e)
    a = events_to_array(events, with_week=True)
    checks = [
        (0, 0, 6, "day", "day of week outside 0..6"),
        (1, 0, MINUTES_PER_DAY - 1, "minute", "minute outside the day (0..1439)"),
        (4, 0, None, "week", "negative week"),
    ]
    if vocab is not None:
        checks.append((2, 0, len(vocab.locations) - 1, "location",
                       f"unknown location id (vocabulary has {len(vocab.locations)})"))
        checks.append((3, 0, len(vocab.behaviors) - 1, "behavior",
                       f"unknown behavior id (vocabulary has {len(vocab.behaviors)})"))
    else:
        checks.append((2, 0, None, "location", "negative location id"))
        checks.append((3, 0, None, "behavior", "negative behavior id"))
    for col, lo, hi, name, reason in checks:
        bad = a[:, col] < lo
        if hi is not None:
            bad |= a[:, col] > hi
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(source, reason, row=i, field=name, value=int(a[i, col]))
    keys = a[:, 4] * MINUTES_PER_WEEK + a[:, 0] * MINUTES_PER_DAY + a[:, 1]
    if n > 1:
        back = np.diff(keys) < 0
        if back.any():
            i = int(np.argmax(back)) + 1
            raise DataError(
                source,
                f"events not in time order: {events[i]} comes after {events[i - 1]}",
                row=i, field="time", value=_fmt_time(events[i]))
        # duplicates: identical (time, location, behavior); events are sorted by time, so
        # duplicates sit inside a run of equal timestamps
        same = np.diff(keys) == 0
        if same.any():
            seen: dict[tuple, int] = {}
            for i in range(n):
                if i > 0 and keys[i] != keys[i - 1]:
                    seen.clear()
                k = (int(a[i, 2]), int(a[i, 3]))
                if k in seen:
                    raise DataError(source, f"duplicate event (same as row {seen[k]})", row=i,
                                    field="event", value=events[i])
                seen[k] = i


def _fmt_time(e: Event) -> str:
    return f"week {e.week} {DAY_ABBRS[e.day] if 0 <= e.day < 7 else e.day} " \
           f"{e.minute // 60:02d}:{e.minute % 60:02d}"


@dataclass(frozen=True)
class Dataset:
    """A named collection of user histories sharing one vocabulary.

    `info` carries free-form provenance (loader options, dropped-row counts, ...).
    Validates every user on construction unless ``validate=False``.
    """

    name: str
    vocab: "Vocabulary"
    users: tuple[UserHistory, ...]
    info: dict = field(default_factory=dict, compare=False)
    validate: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.users, tuple):
            object.__setattr__(self, "users", tuple(self.users))
        if self.validate:
            self.check()

    def check(self) -> None:
        """Validates all users (ids unique, events valid); raises `DataError`."""
        seen: set[str] = set()
        for u in self.users:
            if u.user_id in seen:
                raise DataError(f"dataset {self.name!r}", "duplicate user id", field="user_id",
                                value=u.user_id)
            seen.add(u.user_id)
            validate_events(u.events, self.vocab, source=f"user {u.user_id}")

    def __len__(self) -> int:
        return len(self.users)

    def __iter__(self) -> Iterator[UserHistory]:
        return iter(self.users)

    def user(self, user_id: str) -> UserHistory:
        for u in self.users:
            if u.user_id == user_id:
                return u
        raise KeyError(f"no user {user_id!r} in dataset {self.name!r}")

    @property
    def n_events(self) -> int:
        return sum(len(u.events) for u in self.users)

    def all_events(self) -> Iterable[Event]:
        for u in self.users:
            yield from u.events

    def subset(self, user_ids: Iterable[str], name: str | None = None) -> "Dataset":
        """The users named in `user_ids` (kept in this dataset's order)."""
        wanted = set(user_ids)
        users = tuple(u for u in self.users if u.user_id in wanted)
        return Dataset(name or self.name, self.vocab, users, dict(self.info), validate=False)
