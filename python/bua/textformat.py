"""Events <-> text, one event per line: ``Mon 08:10 @home check weather``.

    <day abbrev> <HH:MM> @<location name> <behavior name>

Fields are separated by exactly one space; the behavior name is the rest of the line (it may
contain spaces, location names may not). Lines are joined with "\\n", no trailing newline.

`parse_events` is strict: every malformed line raises `DataError` naming the line number
(1-based) and what is wrong. The text carries no week, so the parser starts at `week` and
moves to the next week whenever the day of week goes backwards (``Sun`` -> ``Mon``); a time
going backwards inside the same day is an error. `parse_events_report` is the lenient form
for model output: it returns the events it could read and the errors of the rest.
"""
from __future__ import annotations

from typing import Sequence

from bua.events import DAY_ABBRS, DataError, Event
from bua.vocab import Vocabulary

__all__ = [
    "format_event",
    "format_events",
    "format_time",
    "parse_event_line",
    "parse_events",
    "parse_events_report",
]

_DAY_INDEX = {a: i for i, a in enumerate(DAY_ABBRS)}
_TIMES = [f"{m // 60:02d}:{m % 60:02d}" for m in range(1440)]


def format_time(minute: int) -> str:
    """Minute of day -> ``HH:MM``."""
    return _TIMES[minute]


def format_event(e: Event, vocab: Vocabulary) -> str:
    return f"{DAY_ABBRS[e.day]} {_TIMES[e.minute]} @{vocab.locations[e.location]} " \
           f"{vocab.behaviors[e.behavior]}"


def format_events(events: Sequence[Event], vocab: Vocabulary) -> str:
    """One line per event, joined by "\\n" (no trailing newline)."""
    locs, behs = vocab.locations, vocab.behaviors
    return "\n".join(
        f"{DAY_ABBRS[e.day]} {_TIMES[e.minute]} @{locs[e.location]} {behs[e.behavior]}"
        for e in events
    )


def parse_event_line(line: str, vocab: Vocabulary, *, week: int = 0, lineno: int = 1,
                     source: str = "event text") -> Event:
    """Parses one line; raises `DataError` (``<source>: line <n>: ...``)."""
    def err(reason: str, fieldname: str, value: object) -> DataError:
        e = DataError(source, f"line {lineno}: {reason}", field=fieldname, value=value)
        e.row = lineno
        return e

    if line == "" or line.isspace():
        raise err("empty line", "line", line)
    if line != line.strip():
        raise err("leading or trailing whitespace", "line", line)
    parts = line.split(" ", 3)
    if len(parts) < 4:
        raise err("expected 'Day HH:MM @location behavior'", "line", line)
    day_s, time_s, loc_s, beh = parts
    day = _DAY_INDEX.get(day_s)
    if day is None:
        raise err(f"unknown day (expected one of {', '.join(DAY_ABBRS)})", "day", day_s)
    if len(time_s) != 5 or time_s[2] != ":" or not (time_s[:2] + time_s[3:]).isdigit() \
            or not time_s.isascii():
        raise err("time must be HH:MM", "time", time_s)
    hh, mm = int(time_s[:2]), int(time_s[3:])
    if hh > 23 or mm > 59:
        raise err("time outside the day (00:00..23:59)", "time", time_s)
    if not loc_s.startswith("@") or len(loc_s) == 1:
        raise err("location must be written '@name'", "location", loc_s)
    loc_name = loc_s[1:]
    if not vocab.has_location(loc_name):
        raise err(Vocabulary._unknown("location", loc_name, vocab.locations), "location",
                  loc_name)
    if not beh or beh != beh.strip():
        raise err("missing behavior or extra spaces", "behavior", beh)
    if not vocab.has_behavior(beh):
        raise err(Vocabulary._unknown("behavior", beh, vocab.behaviors), "behavior", beh)
    return Event(day, hh * 60 + mm, vocab.location_id(loc_name), vocab.behavior_id(beh), week)


def _parse(text: str, vocab: Vocabulary, week: int, source: str, lenient: bool):
    if not isinstance(text, str):
        raise DataError(source, "expected a string", value=type(text).__name__)
    events: list[Event] = []
    errors: list[DataError] = []
    if text == "":
        return events, errors
    lines = text.split("\n")
    if lines[-1] == "":  # one trailing newline is tolerated
        lines.pop()
    cur_week = week
    prev: Event | None = None
    for i, line in enumerate(lines, start=1):
        try:
            if "\r" in line:
                e = DataError(source, f"line {i}: carriage return in line", field="line",
                              value=line)
                e.row = i
                raise e
            ev = parse_event_line(line, vocab, week=cur_week, lineno=i, source=source)
            if prev is not None:
                if ev.day < prev.day:
                    cur_week += 1
                    ev = Event(ev.day, ev.minute, ev.location, ev.behavior, cur_week)
                elif ev.day == prev.day and ev.minute < prev.minute:
                    e = DataError(source, f"line {i}: time goes backwards "
                                  f"({format_time(prev.minute)} then {format_time(ev.minute)})",
                                  field="time", value=format_time(ev.minute))
                    e.row = i
                    raise e
                elif ev == prev:
                    e = DataError(source, f"line {i}: duplicate of line {i - 1}", field="line",
                                  value=line)
                    e.row = i
                    raise e
        except DataError as e:
            if not lenient:
                raise
            errors.append(e)
            continue
        events.append(ev)
        prev = ev
    return events, errors


def parse_events(text: str, vocab: Vocabulary, week: int = 0, *,
                 source: str = "event text") -> list[Event]:
    """Strict inverse of `format_events`; raises `DataError` at the first bad line.

    The empty string gives no events; one trailing newline is tolerated.
    """
    return _parse(text, vocab, week, source, lenient=False)[0]


def parse_events_report(text: str, vocab: Vocabulary, week: int = 0, *,
                        source: str = "event text") -> tuple[list[Event], list[DataError]]:
    """Lenient parse for model output: (events read, errors of the lines skipped)."""
    return _parse(text, vocab, week, source, lenient=True)
