"""The native extension: build wiring, and decoding token-embedding rows in place of token ids."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bua.backbones import smollm2_gguf_path
from bua.runtime.native import load_native

native = load_native()


@pytest.fixture(scope="module")
def smollm2():
    return native.Model.load(str(smollm2_gguf_path()))


def _greedy(session, n: int) -> list[int]:
    return session.generate(n)["tokens"]


def test_one_libllama_per_process():
    # Importing llama_cpp and bua._native together must map a single libllama.
    code = (
        "import llama_cpp, bua._native, re\n"
        "maps = open('/proc/self/maps').read()\n"
        "print(sorted({l.split()[-1] for l in maps.splitlines() if re.search(r'libllama\\.so', l)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    paths = eval(out)
    assert len(paths) == 1, paths
    assert "llama_cpp" in paths[0]


def test_build_info_names_pinned_llama_cpp_python():
    import importlib.metadata

    info = native.build_info()
    assert info["llama_cpp_python"] == importlib.metadata.version("llama-cpp-python") == "0.3.36"


def test_embedding_rows_reproduce_token_ids(smollm2):
    prompt = "<|im_start|>user\nWhat do people usually do right after the morning alarm clock?<|im_end|>\n<|im_start|>assistant\n"  # noqa: E501
    ids = smollm2.tokenize(prompt, add_special=False, parse_special=True)
    assert len(ids) > 12

    by_ids = native.Session(smollm2, n_ctx=256, n_threads=1)
    by_ids.eval_tokens(ids)
    logits_ids = by_ids.last_logits()
    cont_ids = _greedy(by_ids, 12)

    # Same prompt as three segments: text | embedding rows | text, on one sequence.
    a, b = 4, 11
    rows = smollm2.token_embeddings(ids[a:b])
    assert rows.shape == (b - a, smollm2.n_embd) and rows.dtype == np.float32
    mixed = native.Session(smollm2, n_ctx=256, n_threads=1)
    mixed.eval_tokens(ids[:a])
    mixed.eval_embeddings(rows)
    mixed.eval_tokens(ids[b:])
    assert mixed.n_past == len(ids)
    logits_mixed = mixed.last_logits()

    np.testing.assert_allclose(logits_mixed, logits_ids, atol=1e-4, rtol=0)
    assert _greedy(mixed, 12) == cont_ids


def test_wrong_embedding_width_is_a_clear_error(smollm2):
    s = native.Session(smollm2, n_ctx=64, n_threads=1)
    with pytest.raises(native.LlamaError, match="n_embd is 576"):
        s.eval_embeddings(np.zeros((3, 100), dtype=np.float32))


def test_context_overflow_is_an_error_not_a_crash(smollm2):
    s = native.Session(smollm2, n_ctx=64, n_threads=1)
    room = s.n_ctx  # llama.cpp may round the context up
    s.eval_tokens([100 + i % 50 for i in range(room - 4)])
    with pytest.raises(native.LlamaError, match="context full") as info:
        s.eval_tokens(list(range(200, 210)))
    assert info.value.kind == "context_full" and info.value.status == 0
    assert s.n_past == room - 4  # the dialogue is unchanged


def test_extension_refuses_another_llama_cpp_python(tmp_path):
    # A llama-cpp-python 9.9.9 found first on sys.path: the extension's ABI check must refuse it.
    dist = tmp_path / "llama_cpp_python-9.9.9.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 9.9.9\n")
    code = "import bua._native"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "built against llama-cpp-python==0.3.36 but llama-cpp-python==9.9.9" in result.stderr
    assert "pip install llama-cpp-python==0.3.36" in result.stderr


def test_missing_extension_says_how_to_build_it():
    code = (
        "import sys; sys.modules['bua._native'] = None\n"
        "from bua.runtime.native import load_native\n"
        "try:\n    load_native()\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "bua._native is not installed" in out and "pip install -e ." in out


def test_loaded_llama_cpp_is_safe_on_this_cpu():
    info = native.build_info()["system_info"]
    assert native.build_problems() == [], info
    assert "AMX" not in info


def test_libggml_has_no_amx_backend():
    import llama_cpp

    libs = list((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu.so*"))
    assert libs, "llama-cpp-python ships no libggml-cpu"
    for lib in libs:
        assert b"ggml_backend_amx" not in lib.read_bytes(), f"{lib} has ggml's AMX backend compiled in"


def test_build_problems_reports_amx_and_instruction_sets_the_cpu_lacks():
    assert any("AMX" in p for p in native.build_problems("CPU : SSE3 = 1 | AMX_INT8 = 1 | REPACK = 1 |"))
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    lacking = [
        name
        for name, flag in (
            ("AVX_VNNI", "avx_vnni"),
            ("AVX512_BF16", "avx512_bf16"),
            ("AVX512", "avx512f"),
            ("AVX2", "avx2"),
        )
        if f" {flag}" not in flags
    ]
    if not lacking:
        pytest.skip("this CPU has every instruction set ggml can use")
    problems = native.build_problems(f"CPU : SSE3 = 1 | {lacking[0]} = 1 | REPACK = 1 |")
    assert problems and problems[0].startswith(lacking[0]), problems


def test_dry_penalty_breaks_a_greedy_loop(smollm2):
    def repeats(tokens, k=4):
        grams = [tuple(tokens[i:i + k]) for i in range(len(tokens) - k + 1)]
        return len(grams) - len(set(grams))

    prompt = list(smollm2.tokenize("a b c a b c a b c a b c", add_special=True, parse_special=True))
    runs = {}
    for dry in (0.0, 0.8):
        session = native.Session(smollm2, n_ctx=256, n_threads=2)
        session.eval_tokens(prompt)
        runs[dry] = session.generate(48, dry_multiplier=dry)["tokens"]
    assert repeats(runs[0.0]) > 30  # greedy SmolLM2 repeats one letter
    assert repeats(runs[0.8]) < repeats(runs[0.0]) // 2
    session = native.Session(smollm2, n_ctx=256, n_threads=2)
    session.eval_tokens(prompt)
    with pytest.raises(native.LlamaError, match="dry_base"):
        session.generate(4, dry_multiplier=0.8, dry_base=0.5)


def _clause_repeats(text: str) -> int:
    from bua.metrics import explanation_metrics
    return explanation_metrics([{"answer": text}], [[]], [])["rounds_repeating_a_line"]


def _generate_after(model, prompt: str, n: int, **kwargs):
    session = native.Session(model, n_ctx=256, n_threads=2)
    ids = list(model.tokenize(prompt, add_special=True, parse_special=True))
    session.eval_tokens(ids)
    return session.generate(n, **kwargs), session, ids


def test_unique_clauses_take_back_a_repeated_list_item(smollm2):
    prompt = "Fruits: apple, pear, apple, pear, apple, pear,"
    plain, _, _ = _generate_after(smollm2, prompt, 40)
    assert plain["text"].startswith(" pear, pear,") and _clause_repeats(plain["text"])  # greedy SmolLM2 loops
    out, session, ids = _generate_after(smollm2, prompt, 40, unique_clauses=True)
    # the same text up to the first repeated clause, then new items; none repeats as bua.metrics reads it
    assert out["text"].startswith(" pear,") and out["text"] != plain["text"][:len(out["text"])]
    assert _clause_repeats(out["text"]) == 0 and out["retaken"] > 0
    # what was taken back left the KV cache: it holds the prompt and the kept tokens, whose logits
    # are those of a fresh evaluation of the same tokens
    assert session.n_past == len(ids) + len(out["tokens"])
    fresh = native.Session(smollm2, n_ctx=256, n_threads=2)
    fresh.eval_tokens(ids + list(out["tokens"]))
    np.testing.assert_allclose(session.last_logits(), fresh.last_logits(), atol=1e-3)
    # out of retries, the generation ends before the repeated clause
    once, _, _ = _generate_after(smollm2, prompt, 40, unique_clauses=True, max_retakes=0)
    assert once["stop_reason"] == "repeat" and once["text"] == " pear,"
    with pytest.raises(native.LlamaError, match="max_retakes"):
        _generate_after(smollm2, prompt, 4, unique_clauses=True, max_retakes=-1)


def test_unique_lines_take_back_a_repeated_line_verbatim(smollm2):
    prompt = "Log:\nMon 08:00 @home tea\nMon 08:00 @home tea\nMon 08:00 @home tea\n"
    plain, _, _ = _generate_after(smollm2, prompt, 40)
    lines = plain["text"].split("\n")[:-1]
    assert len(set(lines)) < len(lines)  # greedy SmolLM2 writes the line again
    out, session, ids = _generate_after(smollm2, prompt, 40, unique_lines=True)
    kept = out["text"].split("\n")
    assert out["retaken"] > 0 and len(set(kept)) == len(kept)
    assert session.n_past == len(ids) + len(out["tokens"])
    # out of retries, the generation ends before the repeated line
    once, _, _ = _generate_after(smollm2, prompt, 40, unique_lines=True, max_retakes=0)
    assert once["stop_reason"] == "repeat" and once["text"] == plain["text"][:len(once["text"])]
    assert len(set(once["text"].split("\n"))) == len(once["text"].split("\n"))
    # lines are compared verbatim: lines that differ only in their numbers are new lines (a
    # clause drops its digits and would repeat)
    counting = "row 1\nrow 2\nrow 3\nrow 4\n"
    plain, _, _ = _generate_after(smollm2, counting, 12)
    assert plain["text"].startswith("row 5\nrow 6\nrow 7")
    assert _generate_after(smollm2, counting, 12, unique_lines=True)[0] == plain
    assert _generate_after(smollm2, counting, 12, unique_clauses=True)[0]["retaken"] > 0
    with pytest.raises(native.LlamaError, match="exclude each other"):
        _generate_after(smollm2, prompt, 4, unique_clauses=True, unique_lines=True)


def test_end_after_ends_with_the_sentence_after_a_header(smollm2):
    prompt = "A: 1. B: 2. C: 3. A: 1. B: 2. C: 3. A: 1. B:"
    plain, _, _ = _generate_after(smollm2, prompt, 30)
    assert plain["text"].startswith(" 2. C: 3. A:") and plain["stop_reason"] == "max_tokens"
    out, session, ids = _generate_after(smollm2, prompt, 30, end_after="C:")
    assert out["text"] == " 2. C: 3." and out["stop_reason"] == "end_after"
    assert session.n_past == len(ids) + len(out["tokens"])
    assert smollm2.detokenize(out["tokens"], special=False) == out["text"]
    # a header never written ends nothing
    assert _generate_after(smollm2, prompt, 30, end_after="D:")[0]["text"] == plain["text"]


def test_counts_write_the_given_number_after_a_name_and_its_bracket(smollm2):
    prompt = "Counts: apple (3), pear (5), plum (4), apple (3), pear (5), plum (4),"
    plain, _, _ = _generate_after(smollm2, prompt, 16)
    assert plain["text"].startswith(" apple (3), pear (5), plum (4),")  # greedy SmolLM2 continues the list
    out, session, ids = _generate_after(smollm2, prompt, 16, counts=[("PEAR", 12), ("apple", 7), ("le", 1)])
    # the named counts replace the model's numbers (whole names, any case; "plum" has none), and
    # the number ends where the count does; the model writes everything else
    assert out["text"].startswith(" apple (7), pear (12),"), out["text"]
    claims = re.findall(r"(\w+) \((\d+)", out["text"])
    assert len(claims) >= 3 and all(n == {"apple": "7", "pear": "12"}.get(name, n) for name, n in claims), claims
    assert smollm2.detokenize(out["tokens"], special=False) == out["text"]
    assert session.n_past == len(ids) + len(out["tokens"])
    fresh = native.Session(smollm2, n_ctx=256, n_threads=2)
    fresh.eval_tokens(ids + list(out["tokens"]))
    np.testing.assert_allclose(session.last_logits(), fresh.last_logits(), atol=1e-3)
    # a bracket that does not start a number is left alone
    places = "Moves: gaming (@home -> @cafe), music (@cafe -> @home), gaming ("
    assert _generate_after(smollm2, places, 8, counts=[("gaming", 2)])[0]["text"] == \
        _generate_after(smollm2, places, 8)[0]["text"]
    with pytest.raises(native.LlamaError, match="negative"):
        _generate_after(smollm2, prompt, 4, counts=[("pear", -1)])


def test_banned_phrases_are_taken_back_from_their_first_token(smollm2):
    prompt = "Fruits: apple, pear, apple, pear, apple, pear,"
    plain, _, _ = _generate_after(smollm2, prompt, 12)
    assert "pear" in plain["text"]
    out, session, ids = _generate_after(smollm2, prompt, 40, banned_phrases=["PEAR", "grape"])
    # whole words, any case: never "pear" nor "grape", and the text before the first ban is greedy's
    assert not re.search(r"(?<![a-z0-9])(pear|grape)(?![a-z0-9])", out["text"].lower()), out["text"]
    assert out["retaken"] > 0 and out["tokens"][0] != plain["tokens"][0]
    assert session.n_past == len(ids) + len(out["tokens"])
    fresh = native.Session(smollm2, n_ctx=256, n_threads=2)
    fresh.eval_tokens(ids + list(out["tokens"]))
    np.testing.assert_allclose(session.last_logits(), fresh.last_logits(), atol=1e-3)
    # a phrase inside a longer word is not the phrase
    assert _generate_after(smollm2, prompt, 12, banned_phrases=["pea"])[0]["text"] == plain["text"]
    once, _, _ = _generate_after(smollm2, prompt, 40, banned_phrases=["pear"], max_retakes=0)
    assert once["stop_reason"] == "banned_phrase" and once["text"] == ""
