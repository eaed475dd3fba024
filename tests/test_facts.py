"""What a window shows (`bua.labels.facts`): the labels state only it, `check_claims` catches an
answer that states anything else, and `sections_grammar` lays the sections out as the labels do."""
from __future__ import annotations

import pytest

from bua.dialogue import EXPLAIN_SECTIONS, KEY_BEHAVIORS, PATTERNS, SUMMARY
from bua.events import Event
from bua.labels import Labeler
from bua.labels.facts import Section, check_claims, window_sections
from bua.runtime.grammar import MAX_LISTED_ITEMS, sections_grammar
from bua.samples import prediction_samples
from bua.simulate import simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(40, 14, seed=5)


def _event(day: int, minute: int, location: str, behavior: str, vocab) -> Event:
    return Event(day=day, minute=minute, location=vocab.location_id(location), behavior=vocab.behavior_id(behavior))


@pytest.fixture(scope="module")
def window(sim):
    """Two mornings alike (alarm clock then check weather at home, bus in transit), gaming at home
    in the evening: every section has items."""
    v = sim.vocab
    days = []
    for d in (0, 1):
        days += [_event(d, 420 + d * 10, "home", "alarm clock", v), _event(d, 430 + d * 10, "home", "check weather", v),
                 _event(d, 480, "transit", "bus", v), _event(d, 1200, "home", "gaming", v)]
    return days


def test_window_sections_list_what_the_window_shows(sim, window):
    kb, sh = window_sections(KEY_BEHAVIORS, window, sim.vocab)
    assert (kb.header, sh.header) == ("Frequent:", "Phase shifts:")
    assert set(kb.items) == {"alarm clock (2)", "check weather (2)", "bus (2)", "gaming (2)"} and not kb.alone
    assert set(sh.items) == {"bus (@home -> @transit)", "gaming (@transit -> @home)"}
    assert not sh.alone  # the user changed places
    seq, time, place = window_sections(PATTERNS, window, sim.vocab)
    assert {"alarm clock -> check weather -> bus (2x)", "check weather -> bus -> gaming (2x)",
            "bus -> gaming (2x)"} <= set(seq.items) and "gaming -> alarm clock (1x)" not in seq.items
    assert not seq.alone
    assert set(time.items) == {"alarm clock ~07:10 daily", "check weather ~07:20 daily", "bus ~08:00 daily",
                               "gaming ~20:00 daily"}
    assert time.alone == ("mostly morning",)
    # each place's most frequent behaviors (home ties three), the busiest place first
    assert place.items == ("alarm clock @home", "check weather @home", "gaming @home", "bus @transit")


def test_summary_sections_list_habits_and_anchors_the_window_shows(sim, window):
    habits, anchors = window_sections(SUMMARY, window, sim.vocab)
    assert (habits.header, anchors.header, habits.sep) == ("Habits:", "Anchors:", "; ")
    # a behavior where a commute behavior happened (bus in transit, nothing else there)
    assert not [h for h in habits.items if "while commuting" in h]
    assert {"alarm clock at @home", "bus at @transit", "gaming in the evening at @home",
            "alarm clock in the morning at @home", "alarm clock leads to check weather"} <= set(habits.items)
    assert "gaming in the morning at @home" not in habits.items and "gaming leads to alarm clock" not in habits.items
    assert anchors.items[:4] == ("bus ~08:00 @transit", "gaming ~20:00 @home", "alarm clock ~07:10 @home",
                                 "check weather ~07:20 @home")
    commuting = window + [_event(2, 480, "transit", "music", sim.vocab)]
    assert "music while commuting by bus" in window_sections(SUMMARY, commuting, sim.vocab)[0].items


def test_labels_state_only_what_the_window_shows(sim):
    labeler = Labeler(sim)
    checked = 0
    for s in prediction_samples(sim, stride=11):
        answers = labeler.stage2(s)
        for task in (KEY_BEHAVIORS, PATTERNS):
            claims, right = check_claims(answers[task], window_sections(task, s.history, sim.vocab))
            assert claims >= len(EXPLAIN_SECTIONS[task]) and right == claims, answers[task]
            checked += claims
    assert checked > 1000


@pytest.mark.parametrize("answer, claims, right", [
    ("Frequent: gaming (2), bus (2). Phase shifts: bus (@home -> @transit).", 3, 3),
    ("Frequent: gaming (3), bus (2). Phase shifts: bus (@home -> @transit).", 3, 2),      # a wrong count
    ("Frequent: alarm (2), gaming (2). Phase shifts: bus (@home -> @transit).", 3, 2),    # not a behavior
    ("Frequent: no behavior repeats. Phase shifts: none; the user stays at @home.", 2, 0),  # both false here
    ("Frequent: gaming (2). Phase shifts: gaming (@home -> @school).", 2, 1),             # a place never visited
    ("Frequent: gaming (2).", 1, 1),  # a missing section claims nothing
])
def test_check_claims_catches_what_the_window_does_not_show(sim, window, answer, claims, right):
    assert check_claims(answer, window_sections(KEY_BEHAVIORS, window, sim.vocab)) == (claims, right)


def test_check_claims_on_patterns(sim, window):
    sections = window_sections(PATTERNS, window, sim.vocab)
    good = "Sequences: alarm clock -> check weather -> bus (2x). Time: mostly morning. Place: alarm clock @home."
    assert check_claims(good, sections) == (3, 3)
    bad = "Sequences: gaming -> bus (2x). Time: mostly evening. Place: gaming @transit, bus @transit."
    assert check_claims(bad, sections) == (4, 1)


def test_sections_grammar_lays_out_the_sections_and_repeats_no_item():
    sections = [Section("Frequent:", ("a (2)", "b (2)", "c (3)"), (), ", ", 2),
                Section("Phase shifts:", (), ("none; the user stays at @home",), ", ", 2)]
    g = sections_grammar(sections)
    root = g.splitlines()[0]
    assert root == 'root ::= "Frequent: " b0 "." " Phase shifts: " b1 "."'
    rules = dict(line.split(" ::= ", 1) for line in g.strip().splitlines())
    assert rules["b1"] == '"none; the user stays at @home"'
    # an item once chosen is not offered again, and at most max_items are listed
    assert rules["s0"].count('(", " ') == 3
    assert '"a (2)"' not in rules["s0-0"] and '"b (2)"' in rules["s0-0"] and "(" + '", "' not in rules["s0-0"]
    # items whose clauses read alike (numbers ignored, as the runtime's unique_clauses reads them)
    # are one item: a list never holds both
    zones = dict(line.split(" ::= ", 1) for line in sections_grammar(
        [Section("Place:", ("Food @zone_3", "Food @zone_4", "Bar @zone_1"), (), ", ", 2)]).strip().splitlines())
    assert zones["s0-0"] == '"Bar @zone_1"' and zones["s0-2"] == '"Food @zone_3" | "Food @zone_4"'
    assert zones["s0"].count('(", " ') == 3
    # a long history's many items: the list chooses among the first MAX_LISTED_ITEMS, so the rules
    # stay few (1 + 12 + 66 for up to 3 items)
    many = sections_grammar([Section("Habits:", tuple(f"habit {chr(97 + i % 26)}{i // 26}" for i in range(60)), (),
                                     "; ", 3)])
    listed = [line for line in many.splitlines() if line.startswith("s0")]
    assert len(listed) == 1 + MAX_LISTED_ITEMS + MAX_LISTED_ITEMS * (MAX_LISTED_ITEMS - 1) // 2
    assert '"habit m0"' not in many and '"habit l0"' in many
    with pytest.raises(ValueError, match="Place:"):
        sections_grammar([Section("Place:", (), ())])
