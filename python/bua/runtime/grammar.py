"""GBNF grammars and stop strings that hold llama.cpp's sampling to the bundle's output formats."""
from __future__ import annotations

from typing import Sequence

from bua.events import DAY_ABBRS
from bua.labels.facts import Section
from bua.metrics import clause_key
from bua.vocab import Vocabulary


def _literal(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _alternatives(options: Sequence[str]) -> str:
    # Longest first: GBNF alternatives are tried in order, so a name that is a prefix of
    # another ("watch" / "watch video") must not shadow it.
    return " | ".join(_literal(o) for o in sorted(set(options), key=len, reverse=True))


def event_lines_grammar(vocab: Vocabulary, days: Sequence[int] | None = None,
                        after_day: bool = False) -> str:
    """Lines like ``Mon 08:10 @home check weather`` (bua.textformat), one or more.

    `days` limits the day field (e.g. to the day a generation question names); with
    `after_day` the first line starts after its day and space (the text continues an
    `bua.dialogue.answer_prefix`).
    """
    day_names = [DAY_ABBRS[d] for d in (range(7) if days is None else days)]
    return "\n".join([
        'root ::= ' + ('rest' if after_day else 'line') + ' ("\\n" line)*',
        'line ::= day " " rest',
        'rest ::= time " @" location " " behavior',
        f"day ::= {_alternatives(day_names)}",
        'time ::= ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9]',
        f"location ::= {_alternatives(vocab.locations)}",
        f"behavior ::= {_alternatives(vocab.behaviors)}",
    ]) + "\n"


# A section's list may choose among its first this many items (most salient first): the rules grow
# with the subsets of the chosen items, and a long history can show dozens of habits.
MAX_LISTED_ITEMS = 12


def sections_grammar(sections: Sequence[Section], lead: str = "") -> str:
    """An answer made of `sections` in order, as the labels lay them out ("Frequent: gaming (3),
    music (2). Phase shifts: none; the user stays at @home."), after `lead`: each body one of the
    section's stand-alone texts, or 1 to `max_items` of its items, none twice, joined by its
    separator; the items among the section's first `MAX_LISTED_ITEMS`. Two items count as the
    same when their clauses are (`bua.metrics.clause_key`: "Food @zone_3" and "Food @zone_4" are,
    as the runtime's unique_clauses reads them). Decoded under it, an answer states only what the
    window shows and the model chooses which."""
    rules: dict[str, str] = {}

    def items_rule(j: int, s: Section, keys: list[str], used: tuple[int, ...]) -> str:
        name = f"s{j}-" + "-".join(map(str, used)) if used else f"s{j}"
        if name not in rules:
            rules[name] = ""  # reserved before the recursion below
            said = {keys[i] for i in used}
            fresh = [i for i, key in enumerate(keys) if key not in said]
            options = []
            for i in fresh:
                more = tuple(sorted(used + (i,)))
                if len(more) < s.max_items and any(keys[k] != keys[i] for k in fresh):
                    options.append(f"{_literal(s.items[i])} ({_literal(s.sep)} {items_rule(j, s, keys, more)})?")
                else:
                    options.append(_literal(s.items[i]))
            rules[name] = " | ".join(options)
        return name

    parts = []
    for j, s in enumerate(sections):
        if not s.items and not s.alone:
            raise ValueError(f"section {s.header!r} has nothing it can state")
        keys = [clause_key(item) for item in s.items[:MAX_LISTED_ITEMS]]
        body = [_literal(a) for a in s.alone] + ([items_rule(j, s, keys, ())] if s.items else [])
        rules[f"b{j}"] = " | ".join(body)
        parts.append(f'{_literal((lead if j == 0 else " ") + s.header + " ")} b{j} "."')
    return "\n".join([f"root ::= {' '.join(parts)}"] + [f"{k} ::= {v}" for k, v in rules.items()]) + "\n"


def day_end_stops(day: int) -> list[str]:
    """Stop strings that end a text of `day`'s event lines where it leaves the day: a new line
    that starts with another day, or with `day` at an hour past 23 (``"\\nTue 24:"``)."""
    name = DAY_ABBRS[day]
    return ([f"\n{other} " for other in DAY_ABBRS if other != name]
            + [f"\n{name} {hour}:" for hour in range(24, 100)])
