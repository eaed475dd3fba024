"""bua.textformat: one event per line and its strict parser."""
from __future__ import annotations

import random

import pytest

from bua.events import DataError, Event
from bua.textformat import format_event, format_events, parse_events, parse_events_report
from bua.vocab import Vocabulary

V = Vocabulary(["check weather", "check", "subway", "watch news"], ["home", "work", "zone_3"])


def test_format():
    assert format_event(Event(0, 8 * 60 + 10, 0, 0), V) == "Mon 08:10 @home check weather"
    assert format_events([Event(6, 0, 2, 2), Event(6, 1439, 1, 1)], V) == \
        "Sun 00:00 @zone_3 subway\nSun 23:59 @work check"
    assert format_events([], V) == ""


def test_roundtrip_random():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 30)
        keys = sorted(rng.sample(range(7 * 1440), n))
        events = [Event(k // 1440, k % 1440, rng.randrange(3), rng.randrange(4)) for k in keys]
        assert parse_events(format_events(events, V), V) == events
    # one trailing newline tolerated
    assert parse_events("Mon 08:10 @home check\n", V) == [Event(0, 490, 0, 1)]
    assert parse_events("", V) == []


def test_week_wraps_when_day_goes_back():
    text = "Sat 22:00 @home subway\nSun 01:00 @home subway\nMon 07:00 @work check"
    ev = parse_events(text, V, week=2)
    assert [e.week for e in ev] == [2, 2, 3]


@pytest.mark.parametrize("text, line, what", [
    ("Mon 08:10 @home check weather\nMonday 08:10 @home check", 2, r"unknown day.*'Monday'"),
    ("Mon 8:10 @home check", 1, r"field 'time': line 1: time must be HH:MM \(got '8:10'\)"),
    ("Mon 24:00 @home check", 1, r"time outside the day"),
    ("Mon 08:61 @home check", 1, r"time outside the day"),
    ("Mon 08:10 home check", 1, r"location must be written '@name'"),
    ("Mon 08:10 @house check", 1, r"unknown location 'house'; close names: 'home'"),
    ("Mon 08:10 @home chek weather", 1, r"unknown behavior 'chek weather'.*'check weather'"),
    ("Mon 08:10 @home", 1, r"expected 'Day HH:MM @location behavior'"),
    ("Mon 08:10 @home check\n\nMon 09:00 @home check", 2, r"empty line"),
    ("Mon 08:10 @home check ", 1, r"leading or trailing whitespace"),
    ("Mon 08:10 @home  check", 1, r"missing behavior or extra spaces"),
    ("Mon 09:10 @home check\nMon 08:10 @home check", 2, r"time goes backwards"),
    ("Mon 09:10 @home check\nMon 09:10 @home check", 2, r"duplicate of line 1"),
    ("Mon 09:10 @home check\r", 1, r"carriage return"),
    ("Mon 0a:10 @home check", 1, r"time must be HH:MM"),
])
def test_parser_rejects_with_line_number(text, line, what):
    with pytest.raises(DataError, match=what) as ei:
        parse_events(text, V, source="gen.txt")
    assert str(ei.value).startswith("gen.txt: ")
    assert f"line {line}:" in str(ei.value)
    assert ei.value.row == line


def test_lenient_report():
    text = "Mon 08:10 @home check\nbad line here\nMon 09:00 @work subway"
    events, errors = parse_events_report(text, V)
    assert events == [Event(0, 490, 0, 1), Event(0, 540, 1, 2)]
    assert len(errors) == 1 and "line 2" in str(errors[0])
