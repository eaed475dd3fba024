"""Seeded mutation fuzzing of the three readers of outside input: the event-text parser, the
table loader and the bundle manifest. Every mutated input must load or raise the project's own
error type (DataError / BundleError), never another exception."""
from __future__ import annotations

import json
import random

import pytest

from bua.events import DataError, Event
from bua.loaders import TableColumns, load_table
from bua.runtime.bundle import Bundle, BundleError
from bua.textformat import format_events, parse_events, parse_events_report
from bua.vocab import Vocabulary

VOCAB = Vocabulary(["check weather", "subway", "work", "order takeout", "sleep"], ["home", "office", "station"])
EVENTS = [Event(0, 490, 0, 0), Event(0, 520, 2, 1), Event(0, 560, 1, 2), Event(0, 725, 1, 3), Event(1, 30, 0, 4),
          Event(1, 495, 0, 0)]
NASTY = ["", " ", "\n", "\t", "@", ":", "-1", "99:99", "24:00", "Mon", "Sunday", "\x00", "\u00e9", "\ufeff", "1e309",
         "NaN", "9" * 40, ",", '"', "\r\n", "@home", "check weather"]


def mutate(data: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        i = rng.randrange(len(data) + 1)
        j = min(len(data), i + rng.randint(0, 12))
        if op == 0:
            data = data[:i] + data[j:]                           # delete a span
        elif op == 1:
            data = data[:i] + rng.choice(NASTY) + data[i:]        # insert a nasty token
        elif op == 2:
            data = data[:i] + data[i:j] * rng.randint(2, 3) + data[j:]  # repeat a span
        elif op == 3 and data:
            k = rng.randrange(len(data))
            data = data[:k] + chr(rng.randrange(32, 0x250)) + data[k + 1:]  # replace one character
        elif op == 4:
            lines = data.split("\n")
            rng.shuffle(lines)
            data = "\n".join(lines)                              # reorder lines
        elif op == 5:
            data = data[:i]                                       # truncate
        else:
            data = data.replace(rng.choice(NASTY[9:]) or "x", rng.choice(NASTY))
    return data


def test_event_text_parser_fuzz():
    rng = random.Random(1)
    text = format_events(EVENTS, VOCAB)
    loaded = 0
    for _ in range(3000):
        bad = mutate(text, rng)
        try:
            parse_events(bad, VOCAB)
            loaded += 1
        except DataError:
            pass
        events, errors = parse_events_report(bad, VOCAB)  # lenient: never raises
        assert all(isinstance(e, Event) for e in events) and all(isinstance(e, DataError) for e in errors)
    assert 0 < loaded < 3000


def test_table_loader_fuzz(tmp_path):
    rng = random.Random(2)
    rows = ["user,timestamp,behavior,location"] + [
        f"u{k % 2},2024-01-{1 + k // 3:02d} {8 + k % 3:02d}:{10 * k % 60:02d},"
        f"{VOCAB.behaviors[k % 5]},{VOCAB.locations[k % 3]}"
        for k in range(12)
    ]
    text = "\n".join(rows) + "\n"
    path = tmp_path / "log.csv"
    loaded = 0
    for n in range(600):
        data = mutate(text, rng)
        raw = data.encode("utf-8", "surrogatepass")
        if n % 10 == 0 and raw:  # a few invalid UTF-8 bytes too
            k = rng.randrange(len(raw))
            raw = raw[:k] + bytes([rng.choice((0xE9, 0xFF, 0xC3))]) + raw[k + 1 :]
        path.write_bytes(raw)
        try:
            load_table(path, TableColumns())
            loaded += 1
        except DataError:
            pass
    assert loaded > 0


@pytest.fixture()
def bundle_root(tmp_path):
    from bua.chat import ChatFormat
    from bua.dialogue import default_template
    from bua.export.manifest import SERIALIZATION, soft_token_spec, write_manifest

    root = tmp_path / "b"
    root.mkdir()
    (root / "model-q4_k_m.gguf").write_bytes(b"GGUF" + bytes(64))
    (root / "encoder.onnx").write_bytes(b"onnx" * 8)
    template = default_template()
    write_manifest(
        root,
        {
            "backbone": {"arch": "llama", "n_embd": 576, "name": "smollm2"},
            "quant": "q4_k_m",
            "roles": {"model": "model-q4_k_m.gguf", "encoder": "encoder.onnx"},
            "vocab": VOCAB.to_dict(),
            "chat_format": ChatFormat.chatml().to_dict(),
            "dialogue_template": template.to_dict(),
            "soft_tokens": soft_token_spec(template.marker, {"mode": "per_event", "n_pooled_tokens": 4}, 64, 576),
            "serialization": SERIALIZATION,
            "encoder_io": {},
            "parity": {},
        },
    )
    return root


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def test_manifest_loader_fuzz(bundle_root):
    rng = random.Random(3)
    path = bundle_root / "manifest.json"
    good = json.loads(path.read_text())
    places = [p for p in _paths(good) if p]
    values = [None, True, 0, -1, 1.5, 10**30, "", "x", [], {}, [1, "a"], {"a": None}, "0" * 64]
    loaded = 0
    for n in range(1500):
        manifest = json.loads(json.dumps(good))
        for _ in range(rng.randint(1, 3)):
            where = rng.choice(places)
            parent = manifest
            try:
                for key in where[:-1]:
                    parent = parent[key]
                if rng.random() < 0.3 and isinstance(parent, dict):
                    parent.pop(where[-1], None)
                else:
                    parent[where[-1]] = rng.choice(values)
            except (KeyError, IndexError, TypeError):
                continue
        text = json.dumps(manifest)
        if n % 5 == 0:
            text = mutate(text, rng)
        path.write_text(text)
        try:
            Bundle.load(bundle_root, verify=n % 2 == 0)
            loaded += 1
        except BundleError:
            pass
    assert loaded > 0
