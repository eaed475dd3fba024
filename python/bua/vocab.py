"""Vocabularies: behavior and location names <-> dense ids, frequency classes, JSON io.

Names are what the LLM reads and writes: behaviors appear as whole answers (prediction is
scored over every behavior name followed by the end-of-turn token) and inside event lines
(`Mon 08:10 @home check weather`, see `bua.textformat`). Hence:

- behavior names: distinct, non-empty, no leading/trailing whitespace, no control characters
  (newline, tab, ...), not starting with '@'. Spaces inside are fine; one name may be a prefix
  of another (candidates are scored as whole strings + end of turn).
- location names: distinct, non-empty, no whitespace at all, no control characters, not
  starting with '@' (the text format writes ``@<name>``).

Optional `behavior_groups` maps a behavior name to a coarse group ("work", "leisure",
"commute", ...); the understanding labelers use it where present (hobbies are leisure
behaviors). The export bundle embeds `to_dict()`.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Literal

import numpy as np

from bua.events import DataError, Event, UserHistory

FrequencyClass = Literal["head", "medium", "tail"]
HEAD_THRESHOLD = 0.05   # App. C.1: head > 5 % of the training events
TAIL_THRESHOLD = 0.01   # tail < 1 %; medium in between (1 % .. 5 %, both inclusive)
FORMAT_VERSION = 1

__all__ = ["FrequencyClass", "Vocabulary", "frequency_class_of_share", "name_pattern"]


def _check_name(kind: str, i: int, name: object, *, allow_spaces: bool) -> None:
    src = f"vocabulary {kind}s"
    if not isinstance(name, str):
        raise DataError(src, "name is not a string", row=i, field=kind, value=name)
    if not name or not name.strip():
        raise DataError(src, "empty name", row=i, field=kind, value=name)
    if name != name.strip():
        raise DataError(src, "name has leading or trailing whitespace", row=i, field=kind,
                        value=name)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise DataError(src, "name contains a control character (newline, tab, ...)", row=i,
                        field=kind, value=name)
    if name.startswith("@"):
        raise DataError(src, "name starts with '@' (reserved for locations in event text)",
                        row=i, field=kind, value=name)
    if not allow_spaces and any(c.isspace() for c in name):
        raise DataError(src, "location names may not contain spaces (use e.g. 'zone_3')",
                        row=i, field=kind, value=name)


def name_pattern(name: str) -> re.Pattern:
    """`name` as whole words in lowercased text: no ASCII letter or digit on either side (how
    `bua.metrics.named_behaviors` finds a name, and the runtime a name to keep out of an answer)."""
    return re.compile(r"(?<![a-z0-9])" + re.escape(name.lower()) + r"(?![a-z0-9])")


def frequency_class_of_share(share: float) -> FrequencyClass:
    """App. C.1: head > 5 %, medium 1 %..5 %, tail < 1 %."""
    if share > HEAD_THRESHOLD:
        return "head"
    if share >= TAIL_THRESHOLD:
        return "medium"
    return "tail"


@dataclass(frozen=True)
class Vocabulary:
    """Behavior and location names with dense ids 0..n-1 (list order)."""

    behaviors: list[str]
    locations: list[str]
    behavior_groups: dict[str, str] | None = None
    _behavior_index: dict[str, int] = field(init=False, repr=False, compare=False)
    _location_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "behaviors", list(self.behaviors))
        object.__setattr__(self, "locations", list(self.locations))
        if not self.behaviors:
            raise DataError("vocabulary behaviors", "no behaviors", field="behavior", value=[])
        if not self.locations:
            raise DataError("vocabulary locations", "no locations", field="location", value=[])
        for kind, names, spaces in (("behavior", self.behaviors, True),
                                    ("location", self.locations, False)):
            seen: dict[str, int] = {}
            for i, n in enumerate(names):
                _check_name(kind, i, n, allow_spaces=spaces)
                if n in seen:
                    raise DataError(f"vocabulary {kind}s", f"duplicate name (also row {seen[n]})",
                                    row=i, field=kind, value=n)
                seen[n] = i
            object.__setattr__(self, f"_{kind}_index", seen)
        if self.behavior_groups is not None:
            groups = dict(self.behavior_groups)
            for name, g in groups.items():
                if name not in self._behavior_index:
                    raise DataError("vocabulary behavior_groups", "group for an unknown behavior",
                                    field="behavior", value=name)
                if not isinstance(g, str) or not g:
                    raise DataError("vocabulary behavior_groups", "group must be a non-empty "
                                    "string", field=name, value=g)
            object.__setattr__(self, "behavior_groups", groups)

    # ------------------------------------------------------------------ lookups
    @property
    def n_behaviors(self) -> int:
        return len(self.behaviors)

    @property
    def n_locations(self) -> int:
        return len(self.locations)

    def behavior_id(self, name: str) -> int:
        try:
            return self._behavior_index[name]
        except (KeyError, TypeError):
            raise KeyError(self._unknown("behavior", name, self.behaviors)) from None

    def location_id(self, name: str) -> int:
        try:
            return self._location_index[name]
        except (KeyError, TypeError):
            raise KeyError(self._unknown("location", name, self.locations)) from None

    def has_behavior(self, name: str) -> bool:
        return name in self._behavior_index

    def has_location(self, name: str) -> bool:
        return name in self._location_index

    def behavior_name(self, i: int) -> str:
        if not 0 <= i < len(self.behaviors):
            raise KeyError(f"behavior id {i} outside 0..{len(self.behaviors) - 1}")
        return self.behaviors[i]

    def location_name(self, i: int) -> str:
        if not 0 <= i < len(self.locations):
            raise KeyError(f"location id {i} outside 0..{len(self.locations) - 1}")
        return self.locations[i]

    def group_of(self, behavior: int | str) -> str | None:
        """The behavior's group, or None when the vocabulary has no groups."""
        if self.behavior_groups is None:
            return None
        name = behavior if isinstance(behavior, str) else self.behaviors[behavior]
        return self.behavior_groups.get(name)

    @staticmethod
    def _unknown(kind: str, name: object, names: list[str]) -> str:
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = f"; close names: {', '.join(repr(c) for c in close)}" if close else ""
        return f"unknown {kind} {name!r}{hint} (the vocabulary has {len(names)} {kind}s)"

    # ------------------------------------------------------------------ frequency classes
    def behavior_counts(self, events) -> np.ndarray:
        """Counts per behavior id over events (Events, UserHistories, a Dataset or an array)."""
        counts = np.zeros(len(self.behaviors), dtype=np.int64)
        if isinstance(events, np.ndarray):
            b = events[..., 3].ravel() if events.ndim >= 2 else events.ravel()
            counts += np.bincount(b.astype(np.int64), minlength=len(self.behaviors))[: len(counts)]
            return counts
        c: Counter = Counter()
        for item in events:
            if isinstance(item, UserHistory):
                c.update(e.behavior for e in item.events)
            elif isinstance(item, Event):
                c[item.behavior] += 1
            else:
                raise TypeError(f"expected Event or UserHistory, got {type(item).__name__}")
        for b, n in c.items():
            if not 0 <= b < len(counts):
                raise DataError("frequency_classes", "unknown behavior id", field="behavior",
                                value=b)
            counts[b] = n
        return counts

    def frequency_classes(self, events) -> dict[int, FrequencyClass]:
        """App. C.1 classes of every behavior id by its share of `events` (the training events):
        head > 5 %, medium 1-5 %, tail < 1 % (behaviors never seen are tail)."""
        counts = self.behavior_counts(events)
        total = int(counts.sum())
        if total == 0:
            raise DataError("frequency_classes", "no events to count", field="events", value=0)
        return {b: frequency_class_of_share(counts[b] / total) for b in range(len(counts))}

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict:
        d = {"format_version": FORMAT_VERSION, "behaviors": list(self.behaviors),
             "locations": list(self.locations)}
        if self.behavior_groups is not None:
            d["behavior_groups"] = dict(self.behavior_groups)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        if not isinstance(d, dict) or "behaviors" not in d or "locations" not in d:
            raise DataError("vocabulary", "expected a dict with 'behaviors' and 'locations'",
                            value=type(d).__name__)
        v = d.get("format_version", FORMAT_VERSION)
        if v != FORMAT_VERSION:
            raise DataError("vocabulary", f"unsupported format_version (this bua reads "
                            f"{FORMAT_VERSION})", field="format_version", value=v)
        return cls(list(d["behaviors"]), list(d["locations"]), d.get("behavior_groups"))

    def save(self, path: str | os.PathLike) -> None:
        """Writes JSON (atomically: temp file, then rename)."""
        from bua.fsio import write_bytes

        write_bytes(path, (json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(os.fspath(path), f"not valid JSON: {e}", has_value=False) from e
        return cls.from_dict(d)

    @classmethod
    def from_names(cls, behaviors: Iterable[str], locations: Iterable[str]) -> "Vocabulary":
        """Sorted, de-duplicated names (deterministic ids for vocabularies built from data)."""
        return cls(sorted(set(behaviors)), sorted(set(locations)))
