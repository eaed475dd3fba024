"""bua.events: Event, UserHistory, Dataset, arrays and validation errors."""
from __future__ import annotations

import numpy as np
import pytest

from bua.events import (
    DataError,
    Dataset,
    Event,
    UserHistory,
    UserTraits,
    events_from_array,
    events_to_array,
    events_to_batch,
    history_array,
    validate_events,
)
from bua.vocab import Vocabulary

VOCAB = Vocabulary(["alarm clock", "check weather", "subway"], ["home", "work", "transit"])


def ev(day, minute, loc=0, beh=0, week=0):
    return Event(day, minute, loc, beh, week)


def test_event_is_frozen_slotted_and_ordered():
    e = Event(2, 610, 1, 2, week=3)
    assert e.order_key == 3 * 10080 + 2 * 1440 + 610 == e.abs_minute
    assert e.abs_day == 3 * 7 + 2
    with pytest.raises(AttributeError):
        e.day = 1  # type: ignore[misc]
    assert not hasattr(e, "__dict__")
    assert Event(0, 0, 0, 0) == Event(0, 0, 0, 0, 0)


def test_events_to_array_roundtrip():
    events = [ev(0, 60, 0, 1), ev(0, 70, 2, 2), ev(1, 5, 1, 0, week=1)]
    a = events_to_array(events)
    assert a.dtype == np.int64 and a.shape == (3, 4)
    assert a[1].tolist() == [0, 70, 2, 2]
    a5 = events_to_array(events, with_week=True)
    assert events_from_array(a5) == events
    assert events_to_array([]).shape == (0, 4)


def test_events_to_batch_keeps_last_and_pads_right():
    h1 = UserHistory("a", tuple(ev(0, i, 0, i % 3) for i in range(5)))
    h2 = [ev(1, 3, 1, 1)]
    x, m = events_to_batch([h1, h2], max_len=3)
    assert x.shape == (2, 3, 4) and m.shape == (2, 3) and x.dtype == np.int64 and m.dtype == bool
    assert x[0, :, 1].tolist() == [2, 3, 4]  # the last three events
    assert m[1].tolist() == [True, False, False]
    assert x[1, 0].tolist() == [1, 3, 1, 1] and x[1, 1:].sum() == 0
    x2, _ = events_to_batch([np.array([[0, 1, 2, 0], [0, 2, 2, 1]])], max_len=8)
    assert x2.shape == (1, 2, 4)
    with pytest.raises(ValueError):
        events_to_batch([h1], 0)


def test_history_array_takes_every_history_form():
    events = [ev(0, 10 * i, i % 2, i % 3) for i in range(4)]
    expect = events_to_array(events)
    assert history_array(events).tolist() == expect.tolist()
    assert history_array(UserHistory("a", tuple(events))).tolist() == expect.tolist()
    with_week = events_to_array(events, with_week=True)
    assert history_array(with_week).dtype == np.int64 and history_array(with_week).tolist() == expect.tolist()
    assert history_array([]).shape == (0, 4)


@pytest.mark.parametrize("events, field, reason, value", [
    ([ev(7, 0)], "day", "day of week outside 0..6", 7),
    ([ev(-1, 0)], "day", "day of week outside 0..6", -1),
    ([ev(0, 1440)], "minute", "minute outside the day", 1440),
    ([ev(0, 10), ev(0, 5, beh=1, loc=3)], "location", "unknown location id", 3),
    ([ev(0, 10, beh=9)], "behavior", "unknown behavior id", 9),
    ([ev(0, 10, week=-1)], "week", "negative week", -1),
])
def test_validation_errors_name_user_row_field_value(events, field, reason, value):
    with pytest.raises(DataError) as ei:
        validate_events(events, VOCAB, source="user u7")
    msg = str(ei.value)
    assert msg.startswith("user u7: row ")
    assert f"field '{field}'" in msg and reason in msg and f"(got {value!r})" in msg
    assert ei.value.field == field and ei.value.value == value


def test_unsorted_and_duplicate_and_empty():
    with pytest.raises(DataError, match=r"user x: row 1: field 'time': events not in time order"):
        validate_events([ev(1, 10), ev(0, 20)], VOCAB, source="user x")
    with pytest.raises(DataError, match=r"row 1: field 'time': events not in time order"):
        validate_events([ev(0, 10, week=1), ev(0, 20, week=0)], VOCAB)
    with pytest.raises(DataError, match=r"user x: row 2: field 'event': duplicate event "
                                        r"\(same as row 0\)"):
        validate_events([ev(0, 10, 1, 1), ev(0, 10, 1, 2), ev(0, 10, 1, 1)], VOCAB,
                        source="user x")
    # same time, different behavior: fine
    validate_events([ev(0, 10, 1, 1), ev(0, 10, 1, 2)], VOCAB)
    with pytest.raises(DataError, match=r"user x: field 'events': empty event sequence"):
        validate_events([], VOCAB, source="user x")
    validate_events([], VOCAB, allow_empty=True)


def test_dataset_validates_users_and_ids():
    good = UserHistory("a", (ev(0, 1), ev(0, 2)), UserTraits("retiree", home=0))
    ds = Dataset("t", VOCAB, [good])
    assert len(ds) == 1 and ds.n_events == 2 and ds.user("a") is good
    assert list(ds.all_events()) == list(good.events)
    with pytest.raises(DataError, match=r"user b: row 0: field 'behavior'"):
        Dataset("t", VOCAB, [good, UserHistory("b", (ev(0, 1, beh=5),))])
    with pytest.raises(DataError, match=r"duplicate user id \(got 'a'\)"):
        Dataset("t", VOCAB, [good, good])
    with pytest.raises(DataError, match="user c: field 'events': empty"):
        Dataset("t", VOCAB, [UserHistory("c", ())])
    assert len(ds.subset(["zz"])) == 0
    with pytest.raises(KeyError):
        ds.user("zz")


def test_traits_dict_roundtrip():
    t = UserTraits("office worker", 0, 1, (2, 5), ("commutes by subway",), ((1, 2),))
    assert UserTraits.from_dict(t.to_dict()) == t


@pytest.mark.parametrize("fields, name", [((0.5, 60, 0, 0), "day"), ((0, 60.7, 0, 0), "minute"),
                                          ((6, 1439, 9.9, 3), "location"), ((6, 1439, 9, "36"), "behavior"),
                                          ((0, 1, 2, 3, None), "week"), ((True, 1, 2, 3), "day")])
def test_event_fields_must_be_integers(fields, name):
    with pytest.raises(DataError, match=rf"Event: field '{name}': must be an integer"):
        Event(*fields)


def test_event_accepts_numpy_integers():
    import numpy as np

    e = Event(np.int64(2), np.int32(600), np.int64(1), np.int16(3))
    assert e.order_key == 2 * 1440 + 600
