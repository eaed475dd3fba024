"""bua.vocab: names, ids, frequency classes (App. C.1), JSON io."""
from __future__ import annotations

import json

import pytest

from bua.events import DataError, Event, UserHistory
from bua.vocab import Vocabulary, frequency_class_of_share


def test_ids_and_lookup_errors_list_close_names():
    v = Vocabulary(["check weather", "subway", "watch news"], ["home", "work"])
    assert v.behavior_id("subway") == 1 and v.location_id("work") == 1
    assert v.behavior_name(2) == "watch news" and v.location_name(0) == "home"
    with pytest.raises(KeyError, match=r"unknown behavior 'subwya'; close names: 'subway'"):
        v.behavior_id("subwya")
    with pytest.raises(KeyError, match=r"unknown location 'hom'.*'home'"):
        v.location_id("hom")
    with pytest.raises(KeyError, match=r"unknown location 'zzz' \(the vocabulary has 2"):
        v.location_id("zzz")


@pytest.mark.parametrize("behaviors, locations, msg", [
    (["a", "a"], ["home"], r"vocabulary behaviors: row 1: field 'behavior': duplicate name"),
    (["a", ""], ["home"], r"row 1: field 'behavior': empty name"),
    (["a\nb"], ["home"], r"control character"),
    ([" a"], ["home"], r"leading or trailing whitespace"),
    (["@a"], ["home"], r"starts with '@'"),
    (["a"], ["my home"], r"vocabulary locations: row 0: field 'location': location names may "
                         r"not contain spaces"),
    (["a"], [], r"no locations"),
    ([], ["home"], r"no behaviors"),
    (["a", 3], ["home"], r"not a string"),
])
def test_bad_names(behaviors, locations, msg):
    with pytest.raises(DataError, match=msg):
        Vocabulary(behaviors, locations)


def test_prefix_names_allowed():
    Vocabulary(["watch", "watch news", "watching video"], ["home"])


def test_frequency_classes_app_c1():
    v = Vocabulary([f"b{i}" for i in range(4)], ["home"])
    # 1000 events: b0 900 (90% head), b1 50 (5.0% -> medium, head is > 5%), b2 45 (4.5% medium),
    # b3 5 (0.5% tail)
    counts = [900, 50, 45, 5]
    events = [Event(0, 0, 0, b) for b, n in enumerate(counts) for _ in range(n)]
    classes = v.frequency_classes(events)
    assert classes == {0: "head", 1: "medium", 2: "medium", 3: "tail"}
    assert v.frequency_classes([UserHistory("u", tuple(events))]) == classes
    assert frequency_class_of_share(0.01) == "medium" and frequency_class_of_share(0.0099) == "tail"
    v5 = Vocabulary([f"b{i}" for i in range(5)], ["home"])
    assert v5.frequency_classes(events)[4] == "tail"  # never seen
    with pytest.raises(DataError, match="no events"):
        v.frequency_classes([])


def test_json_roundtrip(tmp_path):
    v = Vocabulary(["check weather", "gaming"], ["home", "zone_1"], {"gaming": "leisure"})
    assert Vocabulary.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    p = tmp_path / "vocab.json"
    v.save(p)
    w = Vocabulary.load(p)
    assert w == v and w.behavior_id("gaming") == 1 and w.group_of("gaming") == "leisure"
    assert w.group_of("check weather") is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="format_version"):
        Vocabulary.from_dict({"behaviors": ["a"], "locations": ["b"], "format_version": 99})
    with pytest.raises(DataError, match="group for an unknown behavior"):
        Vocabulary(["a"], ["b"], {"zz": "x"})
