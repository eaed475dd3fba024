"""bua.samples: user split, prediction and generation samples."""
from __future__ import annotations

import pytest

from bua.events import Event, UserHistory
from bua.samples import GenerationSample, PredictionSample, generation_samples, prediction_samples, split_users
from bua.simulate import simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(40, 14, seed=2)


def test_split_deterministic_disjoint_8_1_1(sim):
    a = split_users(sim)
    b = split_users(list(reversed(sim.users)))
    ids = lambda part: sorted(u.user_id for u in part)  # noqa: E731
    assert [ids(p) for p in a] == [ids(p) for p in b]  # independent of input order
    assert (len(a.train), len(a.val), len(a.test)) == (32, 4, 4)
    assert not set(ids(a.train)) & set(ids(a.test))
    assert sorted(ids(a.train) + ids(a.val) + ids(a.test)) == ids(sim.users)
    assert a.train.vocab is sim.vocab  # Dataset in -> Datasets out
    c = split_users([u.user_id for u in sim], seed=7)
    assert isinstance(c.train, list) and set(c.test) != set(ids(a.test))
    assert split_users([u.user_id for u in sim], seed=42) == split_users(
        [u.user_id for u in sim], seed=42)
    with pytest.raises(ValueError, match="ratios"):
        split_users(sim, ratios=(0.5, 0.1, 0.1))
    small = split_users(["a", "b", "c"])
    assert sum(map(len, small)) == 3 and len(small.val) == len(small.test) == 1


def test_prediction_samples(sim):
    u = sim.users[0]
    s = prediction_samples(u, history_len=40)
    assert len(s) == len(u.events) - 40
    first = s[0]
    assert isinstance(first, PredictionSample) and first.history == u.events[:40]
    assert first.target == u.events[40] and first.index == 40
    assert first.future[0] == first.target
    assert all(e.order_key <= first.history[-1].order_key + 120 for e in first.future)
    strided = prediction_samples(u, history_len=10, stride=5)
    assert strided[-1].target == u.events[-1]
    assert all(b.index - a.index == 5 for a, b in zip(strided, strided[1:]))
    capped = prediction_samples(sim, history_len=40, max_per_user=3)
    assert len(capped) == 3 * len(sim)
    assert capped[2].target == sim.users[0].events[-1]
    short = prediction_samples(u, history_len=40, min_history=5)
    assert len(short[0].history) == 5 and len(short) == len(u.events) - 5
    with pytest.raises(ValueError):
        prediction_samples(u, history_len=10, min_history=20)


def test_generation_samples_next_calendar_day(sim):
    u = sim.users[1]
    gs = generation_samples(u, history_len=100)
    assert gs and all(isinstance(g, GenerationSample) for g in gs)
    for g in gs:
        d = g.target_day[0].abs_day
        assert all(e.abs_day == d for e in g.target_day)
        assert g.history[-1].abs_day == d - 1
        assert 20 <= len(g.history) <= 100
        # the whole day is in the target
        all_d = [e for e in u.events if e.abs_day == d]
        assert list(g.target_day) == all_d
    # a gap day is skipped
    ev = (Event(0, 60, 0, 0), Event(0, 70, 0, 1), Event(2, 60, 0, 0), Event(3, 60, 0, 1))
    g2 = generation_samples(UserHistory("x", ev), history_len=10, min_history=1)
    assert [g.target_day[0].day for g in g2] == [3]
