"""User split and prediction / generation samples (paper sec. 4.1, App. G.1).

- `split_users`: 8:1:1 train/val/test by user, deterministic by seed and independent of the
  input order.
- `PredictionSample`: the last L events (default 40) before a target event -> its behavior.
  Several per user: every `stride`-th position, at most `max_per_user` (evenly spread over the
  user's log, most recent kept), each with at least `min_history` events of history.
- `GenerationSample`: up to 100 events of history ending on calendar day D-1 -> all events
  of day D (the next calendar day, App. G.1). Days D whose previous day has no events are
  skipped, so the target is always the day right after the history's last day.

Samples also keep `future`: the events in the `future_minutes` (default 120) after the last
history event, which the future-scene task describes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence, TypeVar

from bua.events import Dataset, Event, UserHistory

__all__ = ["GenerationSample", "PredictionSample", "Split", "generation_samples",
           "prediction_samples", "split_users"]

T = TypeVar("T")


class Split(NamedTuple):
    train: object
    val: object
    test: object


def _uid(item) -> str:
    if isinstance(item, UserHistory):
        return item.user_id
    if isinstance(item, str):
        return item
    raise TypeError(f"expected UserHistory or user id, got {type(item).__name__}")


def split_users(users, seed: int = 42, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> Split:
    """Splits users into (train, val, test) by `ratios`.

    `users` is a `Dataset` (-> three Datasets), or a sequence of `UserHistory` or of user ids
    (-> three lists of the same kind). Deterministic: users are sorted by id, then shuffled
    with `random.Random(seed)`; sizes are floor(ratio * n) for val and test (at least one each
    when ratio > 0 and n >= 3), the rest train. Each part keeps the input order.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    items = list(users.users if isinstance(users, Dataset) else users)
    ids = [_uid(u) for u in items]
    if len(set(ids)) != len(ids):
        raise ValueError("user ids are not unique")
    n = len(ids)
    order = sorted(ids)
    random.Random(seed).shuffle(order)

    def size(r: float) -> int:
        k = int(r * n + 1e-9)
        return max(k, 1) if r > 0 and n >= 3 else k

    n_val, n_test = size(ratios[1]), size(ratios[2])
    n_train = n - n_val - n_test
    part = {}
    for i, uid in enumerate(order):
        part[uid] = 0 if i < n_train else (1 if i < n_train + n_val else 2)
    groups: list[list] = [[], [], []]
    for uid, item in zip(ids, items):
        groups[part[uid]].append(item)
    if isinstance(users, Dataset):
        names = ("train", "val", "test")
        return Split(*(Dataset(f"{users.name}/{nm}", users.vocab, tuple(g), dict(users.info),
                               validate=False) for nm, g in zip(names, groups)))
    return Split(*groups)


@dataclass(frozen=True)
class PredictionSample:
    """History (the last <= L events before the target) -> the target event's behavior.

    `index` is the target's position in the user's events; `future` the events in the
    window after the history (starting with the target) used by the future-scene task.
    """

    user_id: str
    history: tuple[Event, ...]
    target: Event
    index: int = -1
    future: tuple[Event, ...] = ()


@dataclass(frozen=True)
class GenerationSample:
    """History (<= 100 events, ending on day D-1) -> all events of calendar day D."""

    user_id: str
    history: tuple[Event, ...]
    target_day: tuple[Event, ...]
    index: int = -1           # position of the target day's first event in the user's log
    future: tuple[Event, ...] = ()


def _histories(users) -> Iterable[UserHistory]:
    if isinstance(users, UserHistory):
        return [users]
    if isinstance(users, Dataset):
        return users.users
    return users


def _future(events: Sequence[Event], start: int, end_key: int, minutes: int) -> tuple[Event, ...]:
    out = []
    limit = end_key + minutes
    for j in range(start, len(events)):
        if events[j].order_key > limit:
            break
        out.append(events[j])
    return tuple(out)


def _pick(positions: list[int], max_per_user: int | None) -> list[int]:
    if max_per_user is None or len(positions) <= max_per_user:
        return positions
    if max_per_user <= 0:
        return []
    # evenly spread, always keeping the most recent position
    n = len(positions)
    step = n / max_per_user
    return sorted({positions[n - 1 - int(k * step)] for k in range(max_per_user)})


def prediction_samples(users, history_len: int = 40, *, stride: int = 1,
                       max_per_user: int | None = None, min_history: int | None = None,
                       future_minutes: int = 120) -> list[PredictionSample]:
    """Prediction samples of every user (a `Dataset`, `UserHistory` or a sequence of them).

    Targets are the positions ``i >= min_history`` (default: `history_len`, i.e. full
    windows only) of every `stride`-th event counted back from the user's last event.
    """
    if history_len <= 0 or stride <= 0:
        raise ValueError(f"history_len and stride must be positive (got {history_len}, "
                         f"{stride})")
    min_h = history_len if min_history is None else min_history
    if not 1 <= min_h <= history_len:
        raise ValueError(f"min_history must be in 1..history_len, got {min_h}")
    out: list[PredictionSample] = []
    for u in _histories(users):
        ev = u.events
        positions = list(range(len(ev) - 1, min_h - 1, -stride))[::-1]
        for i in _pick(positions, max_per_user):
            hist = ev[max(0, i - history_len): i]
            out.append(PredictionSample(u.user_id, hist, ev[i], i,
                                        _future(ev, i, hist[-1].order_key, future_minutes)))
    return out


def generation_samples(users, history_len: int = 100, *, min_history: int = 20,
                       max_per_user: int | None = None,
                       future_minutes: int = 120) -> list[GenerationSample]:
    """Generation samples: for every calendar day D of a user whose day D-1 has events and
    with at least `min_history` earlier events, history = the last `history_len` events
    before D, target = all events of D."""
    if history_len <= 0 or not 1 <= min_history <= history_len:
        raise ValueError(f"need 1 <= min_history <= history_len (got {min_history}, "
                         f"{history_len})")
    out: list[GenerationSample] = []
    for u in _histories(users):
        ev = u.events
        starts: list[int] = []  # index of the first event of each calendar day
        prev_day = None
        for j, e in enumerate(ev):
            d = e.abs_day
            if d != prev_day:
                starts.append(j)
                prev_day = d
        valid = []
        for k in range(1, len(starts)):
            s = starts[k]
            if s >= min_history and ev[s].abs_day == ev[s - 1].abs_day + 1:
                valid.append(k)
        for k in _pick(valid, max_per_user):
            s = starts[k]
            e_end = starts[k + 1] if k + 1 < len(starts) else len(ev)
            hist = ev[max(0, s - history_len): s]
            out.append(GenerationSample(u.user_id, hist, ev[s:e_end], s,
                                        _future(ev, s, hist[-1].order_key, future_minutes)))
    return out
