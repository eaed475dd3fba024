"""`bua predict`, `bua generate`, `bua info` through the console script, on the tiny bundle."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from bua.textformat import format_events


def bua(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("bua")
    assert exe, "the bua console script is not installed"
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, input=stdin, timeout=300)


@pytest.fixture(scope="module")
def logs(tmp_path_factory, tiny_dataset):
    """The same users as a CSV table (two users) and one user's history as event lines."""
    root = tmp_path_factory.mktemp("logs")
    vocab = tiny_dataset.vocab
    rows = ["uid,when,act,place"]
    for user in tiny_dataset.users[:2]:
        for e in user.events[:30]:
            day = 1 + e.week * 7 + e.day  # January 2024 starts on a Monday
            rows.append(f"{user.user_id},2024-01-{day:02d} {e.minute // 60:02d}:{e.minute % 60:02d},"
                        f"{vocab.behaviors[e.behavior]},{vocab.locations[e.location]}")
    table = root / "log.csv"
    table.write_text("\n".join(rows) + "\n")
    text = root / "history.txt"
    text.write_text(format_events(tiny_dataset.users[0].events[:30], vocab))
    return {"table": table, "text": text, "users": [u.user_id for u in tiny_dataset.users[:2]],
            "columns": ["--column", "user=uid", "--column", "timestamp=when", "--column", "behavior=act",
                        "--column", "location=place"]}


def test_predict_from_event_lines_table_and_stdin(tiny_bundle, logs):
    by_text = bua("predict", "--bundle", tiny_bundle, "--history", logs["text"], "--json", "--threads", 1)
    assert by_text.returncode == 0, by_text.stderr
    out = json.loads(by_text.stdout)
    assert len(out["top"]) == 5 and out["history_events"] == 30
    assert abs(sum(t["probability"] for t in out["top"])) <= 1.0 + 1e-6
    by_table = bua("predict", "--bundle", tiny_bundle, "--history", logs["table"], *logs["columns"],
                   "--user", logs["users"][0], "--json", "--threads", 1)
    assert by_table.returncode == 0, by_table.stderr
    assert [t["behavior"] for t in json.loads(by_table.stdout)["top"]] == [t["behavior"] for t in out["top"]]
    by_stdin = bua("predict", "--bundle", tiny_bundle, "--history", "-", "--top-k", 3, "--threads", 1,
                   stdin=logs["text"].read_text())
    assert by_stdin.returncode == 0 and "top-3 next behaviors:" in by_stdin.stdout
    assert out["top"][0]["behavior"] in by_stdin.stdout


def test_predict_scoring_rule(tiny_bundle, logs):
    def top(*extra):
        proc = bua("predict", "--bundle", tiny_bundle, "--history", logs["text"], "--json", "--threads", 1, *extra)
        assert proc.returncode == 0, proc.stderr
        return [(t["behavior"], round(t["probability"], 6)) for t in json.loads(proc.stdout)["top"]]

    assert top("--scoring", "constrained") == top()  # the predictor's default
    assert top("--scoring", "summed") != top()
    bad = bua("predict", "--bundle", tiny_bundle, "--history", logs["text"], "--scoring", "best")
    assert bad.returncode == 2 and "invalid choice: 'best'" in bad.stderr


def test_generate_and_explain(tiny_bundle, logs):
    day = bua("generate", "--bundle", tiny_bundle, "--history", logs["text"], "--json", "--threads", 1)
    # The random tiny model may write nothing that parses; the command then says so (exit 1).
    assert day.returncode in (0, 1), day.stderr
    if day.returncode == 0:
        assert json.loads(day.stdout)["events"]
    else:
        assert "did not parse" in day.stderr and "Traceback" not in day.stderr
    sampled = [bua("generate", "--bundle", tiny_bundle, "--history", logs["text"], "--threads", 1, "--temperature",
                   1.0, "--top-p", 0.9, "--seed", 3) for _ in range(2)]
    first, again = sampled
    assert first.returncode in (0, 1) and (first.stdout, first.stderr) == (again.stdout, again.stderr)
    bad = bua("generate", "--bundle", tiny_bundle, "--history", logs["text"], "--top-p", 2)
    assert bad.returncode != 0 and "top_p must lie in (0, 1]" in bad.stderr and "Traceback" not in bad.stderr
    bad = bua("generate", "--bundle", tiny_bundle, "--history", logs["text"], "--min-p", 1)
    assert bad.returncode != 0 and "min_p must lie in [0, 1)" in bad.stderr and "Traceback" not in bad.stderr
    explained = bua("predict", "--bundle", tiny_bundle, "--history", logs["text"], "--explain", "--threads", 1)
    assert explained.returncode == 0 and "[key_behaviors]" in explained.stdout


def test_info_describes_and_verifies(tiny_bundle, tmp_path):
    info = bua("info", "--bundle", tiny_bundle)
    assert info.returncode == 0 and "verified" in info.stdout and "llama.cpp" in info.stdout
    data = json.loads(bua("info", "--bundle", tiny_bundle, "--json").stdout)
    assert data["verified"] and data["quant"] == "q8_0" and data["llama_cpp"]["problems_on_this_cpu"] == []
    not_bundle = bua("info", "--bundle", tmp_path)
    assert not_bundle.returncode == 1 and "does NOT verify" in not_bundle.stdout


@pytest.mark.parametrize("extra, message", [
    (["--user", "nobody"], "has no user 'nobody'"),
    ([], "holds 2 users"),
])
def test_table_user_errors(tiny_bundle, logs, extra, message):
    r = bua("predict", "--bundle", tiny_bundle, "--history", logs["table"], *logs["columns"], *extra)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr


def test_bad_inputs_are_clear_errors(tiny_bundle, logs, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    unknown = tmp_path / "unknown.txt"
    line = logs["text"].read_text().split("\n")[0]
    unknown.write_text(line.rsplit(" ", 1)[0] + " zzz unknown behavior")
    cases = [(["--bundle", tiny_bundle, "--history", empty], "no events"),
             (["--bundle", tiny_bundle, "--history", unknown], "unknown behavior"),
             (["--bundle", tmp_path, "--history", logs["text"]], "not a bua bundle"),
             (["--bundle", tiny_bundle, "--history", tmp_path / "missing.txt"], "no such file")]
    for args, message in cases:
        r = bua("predict", *args)
        assert r.returncode == 1, (args, r.stdout)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
