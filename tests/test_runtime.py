"""OnDevicePredictor on a tiny exported bundle: prediction, explanation rounds, generation with
grammar-constrained retries, KV reuse, thread safety, the C++-only path, and clear errors."""
from __future__ import annotations

import gc
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bua import OnDevicePredictor
from bua.dialogue import EXPLAIN_SECTIONS, KEY_BEHAVIORS, PATTERNS, PREDICT, SUMMARY, render_dialogue, tokenize_segments
from bua.events import DAY_ABBRS, Event, events_to_batch
from bua.labels.facts import check_claims, window_sections
from bua.labels.profile import RHYTHMS, trait_interests
from bua.metrics import in_sections
from bua.runtime.bundle import Bundle, BundleError
from bua.runtime.grammar import day_end_stops, event_lines_grammar, sections_grammar
from bua.runtime.native_prompt import write_native_prompt
from bua.runtime.predictor import ORT_ALLOW_SPINNING, GenerationError, encoder_session
from bua.textformat import format_events

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return tiny_dataset


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle) -> Path:
    return tiny_bundle


@pytest.fixture(scope="module")
def predictor(bundle_dir) -> OnDevicePredictor:
    return OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, max_answer_tokens=24,
                                         max_generation_tokens=96)


@pytest.fixture(scope="module")
def history(dataset) -> list[Event]:
    return list(dataset.users[0].events[:30])


def test_predict_fast_path_returns_vocabulary_distribution(predictor, history):
    result = predictor.predict(history, top_k=5, explain=False)
    names = [s.behavior for s in result.top]
    assert len(names) == 5 and len(set(names)) == 5
    assert all(n in predictor.vocab.behaviors for n in names)
    assert all(predictor.vocab.behaviors[s.behavior_id] == s.behavior for s in result.top)
    probs = [s.probability for s in result.top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    assert result.explanation == {}
    assert result.soft_tokens == len(history)

    full = predictor.predict(history, top_k=predictor.vocab.n_behaviors, explain=False)
    assert sum(s.probability for s in full.top) == pytest.approx(1.0, abs=1e-9)
    assert [s.behavior for s in full.top[:5]] == names


def test_constrained_scoring_is_a_distribution_over_the_behaviors(predictor, history, bundle_dir):
    """The default scoring: every behavior scored exactly, probabilities that sum to 1, in the
    order of `behavior_logprobs`; a name's constrained probability is at least its share of the
    unconstrained mass (renormalizing only removes the mass of non-names)."""
    assert predictor.scoring == "constrained"
    n = predictor.vocab.n_behaviors
    logp = predictor.behavior_logprobs(history)
    assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-9)
    result = predictor.predict(history, top_k=n, explain=False)
    assert result.scored_behaviors == n
    assert [s.behavior_id for s in result.top] == list(np.argsort(-logp, kind="stable"))
    assert [s.probability for s in result.top] == pytest.approx(list(np.exp(np.sort(logp)[::-1])), abs=1e-9)
    summed = OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, scoring="summed").behavior_logprobs(history)
    assert np.all(logp >= summed - 1e-4)
    with pytest.raises(ValueError, match="scoring must be one of constrained, summed"):
        OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, scoring="greedy")


def test_fast_path_scores_the_top_k_exactly_and_bounds_the_rest(bundle_dir, history):
    """Summed scoring scores behaviors best first and stops when the rest cannot matter: the
    top k equal full scoring's, and each probability is at most 1 + score_tolerance times its
    softmax over every behavior."""
    predictor = OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, scoring="summed")
    n = predictor.vocab.n_behaviors
    exact = predictor.behavior_logprobs(history)
    order = np.argsort(-exact, kind="stable")
    p_all = np.exp(exact - exact.max())
    p_all /= p_all.sum()
    for k in (1, 3):
        result = predictor.predict(history, top_k=k, explain=False)
        assert [s.behavior_id for s in result.top] == list(order[:k])
        assert [s.logprob for s in result.top] == pytest.approx(list(exact[order[:k]]), abs=1e-4)
        for s in result.top:
            want = p_all[s.behavior_id]
            assert want - 1e-6 <= s.probability <= want * (1 + predictor.score_tolerance) + 1e-6
        assert k <= result.scored_behaviors <= n
    everything = OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, score_tolerance=0.0, scoring="summed")
    result = everything.predict(history, top_k=3, explain=False)
    assert result.scored_behaviors == n
    assert [s.probability for s in result.top] == pytest.approx(list(p_all[order[:3]]), abs=1e-6)


def test_prediction_is_deterministic_and_kv_reuse_is_exact(predictor, history, dataset):
    first = predictor.predict(history, explain=False)
    other = predictor.predict(list(dataset.users[1].events[:20]), explain=False)  # dirties the cache
    again = predictor.predict(history, explain=False)
    assert [s.logprob for s in again.top] == pytest.approx([s.logprob for s in first.top], abs=1e-5)
    assert other.soft_tokens == 20


def test_constrained_scoring_shares_the_prompts_last_decode(predictor, history):
    """The prediction round's rows and the names' branches go into one llama_decode, with the
    scores, the dialogue and its logits of evaluating first and scoring after."""
    engine = predictor.engine
    soft = predictor.soft_tokens(history)
    _, fused = engine.start(PREDICT, soft, score=True)
    n_past, logits = engine.n_past, engine.session.last_logits()
    _, none = engine.start(PREDICT, soft)
    separate = engine.constrained_candidates()
    assert none is None and fused.decodes == 0 and separate.decodes >= 1
    assert fused.positions == separate.positions > 0
    assert fused.logprob == pytest.approx(separate.logprob, abs=1e-4)
    assert engine.n_past == n_past and np.abs(engine.session.last_logits() - logits).max() < 1e-4
    assert predictor.predict(history, explain=False).top[0].logprob == pytest.approx(separate.logprob.max(), abs=1e-4)


def test_prompt_tokens_match_training_tokenization(predictor, history):
    """The contract: the runtime feeds llama.cpp the token ids training computes with HF."""
    from transformers import AutoTokenizer

    from bua.backbones import resolve_backbone

    tok = AutoTokenizer.from_pretrained(str(resolve_backbone("tiny-llama")))
    segs = render_dialogue(predictor.template, predictor.chat, [PREDICT], [None])
    training = tokenize_segments(segs, tok, n_soft=len(history))
    runtime: list[int] = []
    for seg in segs:
        runtime += [-1] * len(history) if seg.kind == "soft" else predictor.engine.tokens(seg.text)
    assert runtime == training.input_ids.tolist()
    assert predictor.predict(history, explain=False).prompt_tokens == len(runtime)


def test_explain_runs_the_understanding_rounds(predictor, history):
    result = predictor.predict(history, top_k=3, explain=True)
    assert list(result.explanation) == ["key_behaviors", "patterns", "summary"]
    assert len(result.top) == 3
    # three generated answers sit in the KV cache before the final round
    assert result.prompt_tokens > predictor.predict(history, explain=False).prompt_tokens


class RecordingSession:
    """A native session whose generate and constrained-scoring calls are recorded."""

    def __init__(self, session):
        self.session = session
        self.calls: list[dict] = []    # generate's stop strings and keyword arguments
        self.chosen: list[list] = []   # score_constrained's candidates

    def __getattr__(self, name):
        return getattr(self.session, name)

    def generate(self, max_tokens, stop, **kwargs):
        self.calls.append({"stop": stop, **kwargs})
        return self.session.generate(max_tokens, stop, **kwargs)

    def score_constrained(self, candidates):
        self.chosen.append(candidates)
        return self.session.score_constrained(candidates)


@pytest.mark.parametrize("layout", [True, False])
def test_understanding_rounds_decode_under_the_configured_dry_penalty_and_end_at_a_newline(bundle_dir, history, layout):
    predictor = OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, max_answer_tokens=8,
                                              dry_multiplier=2.0, dry_allowed_length=3, unique_clauses=layout,
                                              end_after_last_section=layout, grounded_names=layout,
                                              grounded_counts=layout, grounded_trait=layout, grounded_facts=False)
    recording = RecordingSession(predictor.engine.session)
    calls, chosen = recording.calls, recording.chosen
    predictor.engine.session = recording
    explanation = predictor.predict(history, explain=True).explanation
    assert len(calls) == 3
    assert all(c["dry_multiplier"] == 2.0 and c["dry_allowed_length"] == 3 for c in calls), calls
    # the trained answers are one line, so each round ends at its first newline
    assert all(c["stop"] == ["\n"] for c in calls) and not [a for a in explanation.values() if "\n" in a]
    # no clause repeats, and each answer ends with the sentence after its last section's header
    assert [c["unique_clauses"] for c in calls] == [layout] * 3
    assert [c["end_after"] for c in calls] == (["Phase shifts:", "Place:", "Anchors:"] if layout else [""] * 3)
    # grounded: every round may name only the behaviors of the window the encoder reads
    names = predictor.vocab.behaviors
    seen = {names[e.behavior] for e in history[-predictor.bundle.max_history:]}
    absent = sorted(set(names) - seen) if layout else []
    assert all(sorted(c["banned_phrases"]) == absent for c in calls), (calls[0]["banned_phrases"], absent)
    # counted: the key-behaviors round writes each behavior's number of events in that window
    window = [names[e.behavior] for e in history[-predictor.bundle.max_history:]]
    want = sorted((n, window.count(n)) for n in set(window)) if layout else []
    assert [sorted(c["counts"]) for c in calls] == [want, [], []]
    # the summary's trait is one the labels can write for that window, the likeliest of them
    window_ids = [e.behavior for e in history[-predictor.bundle.max_history:]]
    traits = [f" {i} {r}." for i in trait_interests(predictor.vocab, window_ids) for r in RHYTHMS]
    assert chosen[:-1] == ([[predictor.engine.tokens(x) for x in traits]] if layout else [])  # last: the names
    assert any(explanation["summary"].startswith("Trait:" + x) for x in traits) == layout


def test_grounded_facts_rounds_state_only_what_the_window_shows(bundle_dir, dataset):
    """The key-behaviors and patterns rounds, and the summary after its chosen trait, decode under
    the grammar of their window's facts (a random model's greedy answers included), in their
    labels' sections."""
    predictor = OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, max_answer_tokens=256)
    recording = RecordingSession(predictor.engine.session)
    predictor.engine.session = recording
    for user in dataset.users:
        for end in (12, 30):
            history = list(user.events[:end])
            window = history[-predictor.bundle.max_history:]
            del recording.calls[:]
            explanation = predictor.predict(history, explain=True).explanation
            sections = {t: window_sections(t, window, predictor.vocab) for t in (KEY_BEHAVIORS, PATTERNS, SUMMARY)}
            assert [c.get("grammar", "") for c in recording.calls] == [
                sections_grammar(sections[KEY_BEHAVIORS]), sections_grammar(sections[PATTERNS]),
                sections_grammar(sections[SUMMARY], " ")]
            for task, s in sections.items():
                claims, right = check_claims(explanation[task], s)
                assert claims >= len(s) and right == claims, explanation[task]
                assert in_sections(explanation[task], EXPLAIN_SECTIONS[task]), explanation[task]
            assert explanation[SUMMARY].startswith("Trait: ")


def test_generate_falls_back_to_the_grammar_and_parses(predictor, history):
    day = predictor.generate(history, explain=False)
    assert day.events, day.text
    next_day = (history[-1].day + 1) % 7
    assert {e.day for e in day.events} == {next_day}
    assert format_events(day.events, predictor.vocab).startswith(day.text.split("\n")[0])
    # the tiny random model's free attempt does not parse, so the grammar retry made this day
    assert day.constrained and day.free_text != day.text
    # both attempts continue the answer's opening, the next day's abbreviation (the random model
    # may end its turn right after it)
    assert day.free_text.startswith(DAY_ABBRS[next_day]) and day.text.startswith(DAY_ABBRS[next_day] + " ")


@pytest.mark.parametrize("rules", [True, False])
def test_generate_decodes_under_the_day_rules(bundle_dir, history, rules):
    predictor = OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, max_generation_tokens=48,
                                              unique_lines=rules, stop_at_day_end=rules)
    recording = RecordingSession(predictor.engine.session)
    calls = recording.calls
    predictor.engine.session = recording
    predictor.generate(history, explain=False)
    next_day = (history[-1].day + 1) % 7
    assert len(calls) == 2  # the free attempt and the grammar retry, under the same rules
    assert all(c["unique_lines"] == rules for c in calls)
    assert all(c["stop"] == (day_end_stops(next_day) if rules else []) for c in calls)


def test_generate_question_names_the_behaviors_the_soft_tokens_stand_for(tiny_bundle_generation_names, history):
    predictor = OnDevicePredictor.from_bundle(tiny_bundle_generation_names, n_threads=1, max_generation_tokens=24)
    texts: list[str] = []
    eval_segments = predictor.engine.eval_segments

    def recording(segments, soft, score=False):
        texts.extend(s.text for s in segments)
        return eval_segments(segments, soft, score)

    predictor.engine.eval_segments = recording
    predictor.generate(history, explain=False)
    # most frequent first, ties in order of first appearance (Counter keeps insertion order)
    names = [predictor.vocab.behaviors[b] for b, _ in Counter(e.behavior for e in history).most_common()]
    prompt = "".join(texts)
    assert f"The history's behaviors: {', '.join(names)}." in prompt, prompt


def test_day_end_stops_are_new_lines_outside_the_day():
    stops = day_end_stops(1)
    assert "\nWed " in stops and "\nSun " in stops and "\nTue 24:" in stops and "\nTue 99:" in stops
    assert not [s for s in stops if s.startswith("\nTue ") and int(s[5:7]) < 24]
    assert not [s for s in stops if s == "\nTue "]


def test_generate_leaves_out_the_line_the_token_limit_cut(predictor, history):
    next_day = (history[-1].day + 1) % 7
    vocab = predictor.vocab
    line = f"08:00 @{vocab.locations[0]} {vocab.behaviors[0]}"

    class Cut(RecordingSession):  # a free attempt that the token limit ended inside its second line
        def generate(self, max_tokens, stop, **kwargs):
            return {"text": f"{line}\n{DAY_ABBRS[next_day]} 09:1", "tokens": [], "stop_reason": "max_tokens",
                    "retaken": 0}

    native_session = predictor.engine.session
    predictor.engine.session = Cut(native_session)
    try:
        day = predictor.generate(history, explain=False)
    finally:
        predictor.engine.session = native_session
    assert not day.constrained and day.free_text == day.text == f"{DAY_ABBRS[next_day]} {line}"
    assert len(day.events) == 1


def test_generate_reports_unparseable_text(predictor, history):
    with pytest.raises(GenerationError, match="did not parse after 1 attempt") as caught:
        predictor.generate(history, explain=False, max_retries=0)
    assert len(caught.value.attempts) == 1 and repr(caught.value.attempts[0][:300]) in str(caught.value)


def free_day_text(predictor, history, **sampling) -> str:
    """The free (unconstrained) attempt's text of a day, parsed or not."""
    try:
        return predictor.generate(history, explain=False, max_retries=0, **sampling).free_text
    except GenerationError as e:
        return e.attempts[0]


def test_generate_samples_reproducibly_from_its_seed(predictor, history):
    """temperature > 0 samples the day: one seed gives one text, another seed another; each
    attempt gets its own seed, so a grammar retry is not the free attempt's draw again."""
    def free_text(seed):
        return free_day_text(predictor, history, temperature=1.0, top_p=0.95, seed=seed)

    assert free_text(7) == free_text(7)
    assert len({free_text(seed) for seed in range(4)}) > 1
    for bad in (dict(temperature=-0.1), dict(temperature=6.0), dict(top_p=0.0), dict(top_p=1.5),
                dict(min_p=-0.1), dict(min_p=1.0), dict(seed=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            predictor.generate(history, explain=False, **bad)


def test_min_p_drops_the_unlikely_tokens(predictor, history):
    """min_p keeps the tokens at least min_p times as likely as the best one: near 1 only the
    best survives, so sampling at any temperature writes the greedy text."""
    def free_text(**sampling):
        return free_day_text(predictor, history, **sampling)

    greedy = free_text(temperature=0.0)
    assert {free_text(temperature=2.0, top_p=1.0, min_p=0.999, seed=seed) for seed in range(3)} == {greedy}
    assert len({free_text(temperature=2.0, top_p=1.0, seed=seed) for seed in range(3)}) > 1


def test_grammar_is_valid_gbnf_for_llama_cpp(predictor, history):
    grammar = event_lines_grammar(predictor.vocab, days=[2])
    s = predictor.engine.native.Session(predictor.model, n_ctx=256, n_threads=1)
    s.eval_tokens(predictor.engine.tokens("<|im_start|>assistant\n"))
    text = s.generate(40, grammar=grammar, keep=False)["text"]
    assert text.startswith("Wed ")
    # after_day: the text continues a line whose day is already written
    s.eval_tokens(predictor.engine.tokens("Wed "))
    rest = s.generate(40, grammar=event_lines_grammar(predictor.vocab, days=[2], after_day=True))["text"]
    assert re.match(r"[0-2][0-9]:[0-5][0-9] @", rest), rest
    with pytest.raises(predictor.engine.native.LlamaError, match="invalid GBNF"):
        s.generate(4, grammar="root ::= (")


def test_encoder_session_does_not_busy_wait_between_runs(bundle_dir, dataset):
    """onnxruntime's workers spin after a run by default, taking a core from the llama.cpp
    decode that follows every encoder run; the runtime's session must sleep instead. CPU time,
    not wall time: a spinning worker burns a core through each idle gap."""
    session = encoder_session(Bundle.load(bundle_dir).encoder_path, n_threads=2)
    assert session.get_session_options().get_session_config_entry(ORT_ALLOW_SPINNING) == "0"
    batch, mask = events_to_batch([list(dataset.users[0].events[:16])], 16)
    session.run(None, {"events": batch, "mask": mask})
    runs, gap = 8, 0.03
    cpu = time.process_time()
    for _ in range(runs):
        session.run(None, {"events": batch, "mask": mask})
        time.sleep(gap)
    busy = time.process_time() - cpu
    assert busy < 0.5 * runs * gap, f"{busy:.3f} s of CPU over {runs} runs and {runs * gap:.2f} s of idle gaps"


def test_threads_share_one_predictor_safely(predictor, dataset):
    histories = [list(u.events[:25]) for u in dataset.users]
    sequential = [[s.behavior for s in predictor.predict(h, explain=False).top] for h in histories]
    results: dict[int, list[str]] = {}

    def work(i: int) -> None:
        results[i] = [s.behavior for s in predictor.predict(histories[i % len(histories)], explain=False).top]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(8)] == [sequential[i % len(histories)] for i in range(8)]


def test_history_as_event_text(predictor, history):
    text = format_events(history, predictor.vocab)
    assert predictor.predict(text, explain=False).top == predictor.predict(history, explain=False).top


def test_clear_errors_for_bad_histories(predictor, history):
    with pytest.raises(ValueError, match="history is empty"):
        predictor.predict([])
    too_long = history * 10
    with pytest.raises(ValueError, match=f"at most {predictor.bundle.max_history}"):
        predictor.predict(too_long)
    bad = list(history)
    bad[3] = Event(bad[3].day, bad[3].minute, bad[3].location, 999, bad[3].week)
    with pytest.raises(ValueError, match="behavior.*999"):
        predictor.predict(bad)
    bad[3] = Event(bad[3].day, bad[3].minute, 77, 0, bad[3].week)
    with pytest.raises(ValueError, match="location.*77"):
        predictor.predict(bad)
    with pytest.raises(ValueError, match="horizon"):
        predictor.generate(history, horizon="2w")


def test_out_of_context_is_an_error_not_a_crash(bundle_dir, history):
    small = OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, n_ctx=64, max_generation_tokens=4096)
    assert small.engine.session.n_ctx < 4096
    with pytest.raises(RuntimeError, match="context full"):
        small.generate(history, explain=False, max_retries=0)
    assert small.predict(history, explain=False).top  # still usable afterwards


def test_bundle_damage_is_detected(bundle_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    onnx = broken / "encoder.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BundleError, match="encoder.onnx"):
        OnDevicePredictor.from_bundle(broken)
    (broken / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match="encoder.onnx"):
        OnDevicePredictor.from_bundle(broken)


def test_gguf_width_mismatch_is_named(bundle_dir, tmp_path):
    import dataclasses

    bundle = Bundle.load(bundle_dir)
    wrong = dataclasses.replace(bundle, backbone=dataclasses.replace(bundle.backbone, n_embd=96))
    with pytest.raises(ValueError, match="n_embd is 64.*96"):
        OnDevicePredictor(wrong, n_threads=1)


def test_rss_stays_flat_over_1000_predictions(predictor, history):
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    for _ in range(100):
        predictor.predict(history, explain=False)
    gc.collect()
    before = proc.memory_info().rss
    for _ in range(1000):
        predictor.predict(history, explain=False)
    gc.collect()
    grown = proc.memory_info().rss - before
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 1000 predictions"


def test_cpp_example_matches_python_fast_path(bundle_dir, predictor, history, tmp_path):
    """cpp/examples/bua_predict: the same prediction from C++ alone."""
    from test_cpp import _cmake

    bundle = Bundle.load(bundle_dir)
    work = tmp_path / "bundle"
    shutil.copytree(bundle_dir, work)
    write_native_prompt(work, bundle.roles["model"], bundle.chat_format, bundle.dialogue_template, bundle.vocab)
    np.save(tmp_path / "soft.npy", predictor.soft_tokens(history))

    import sysconfig

    build = tmp_path / "build"
    subprocess.run(
        [
            _cmake(),
            "-S",
            str(ROOT),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DBUA_BUILD_EXAMPLES=ON",
            f"-DCMAKE_PREFIX_PATH={sysconfig.get_paths()['purelib']}",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [_cmake(), "--build", str(build), "-j", "2", "--target", "bua-predict"], check=True, capture_output=True
    )
    out = subprocess.run(
        [str(build / "bua-predict"), str(work), str(tmp_path / "soft.npy"), "--top-k", "3", "--threads", "1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if line[:1].isdigit()]
    names = [line.split(".", 1)[1].rsplit("p=", 1)[0].strip() for line in lines]
    probs = [float(line.rsplit("p=", 1)[1]) for line in lines]
    expected = predictor.predict(history, top_k=3, explain=False).top
    assert names == [s.behavior for s in expected]
    assert probs == pytest.approx([s.probability for s in expected], abs=1e-3)

    out = subprocess.run(
        [str(build / "bua-predict"), str(work), str(tmp_path / "soft.npy"), "--top-k", "3", "--threads", "1",
         "--scoring", "summed"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if line[:1].isdigit()]
    summed = OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, scoring="summed")
    expected = summed.predict(history, top_k=3, explain=False).top
    assert [line.split(".", 1)[1].rsplit("p=", 1)[0].strip() for line in lines] == [s.behavior for s in expected]
    assert [float(line.rsplit("p=", 1)[1]) for line in lines] == pytest.approx(
        [s.probability for s in expected], abs=1e-3)

    # --stream: one prediction per growing prefix, each evaluating only the new row and the question
    first = len(history) - 3
    out = subprocess.run(
        [
            str(build / "bua-predict"),
            str(work),
            str(tmp_path / "soft.npy"),
            "--top-k",
            "3",
            "--threads",
            "1",
            "--stream",
            str(first),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    blocks = out.split("prompt: ")[1:]
    assert len(blocks) == 4
    for n, block in zip(range(first, len(history) + 1), blocks):
        assert f"({n} soft tokens)" in block
        lines = block.splitlines()[1:]  # after "N positions (n soft tokens)"
        expected = predictor.predict(history[:n], top_k=3, explain=False).top
        assert [line.split(".", 1)[1].rsplit("p=", 1)[0].strip() for line in lines] == [s.behavior for s in expected]
        assert [float(line.rsplit("p=", 1)[1]) for line in lines] == pytest.approx(
            [s.probability for s in expected], abs=1e-3
        )


def test_predictor_refuses_a_llama_cpp_build_this_cpu_cannot_run(bundle_dir, monkeypatch):
    # e.g. ggml's AMX backend compiled in: refused before any decode could die with SIGILL.
    import bua.runtime.predictor as predictor_module
    from bua.runtime.native import LlamaBuildError, load_native

    real = load_native()

    class AmxBuild:
        def __getattr__(self, name):
            return getattr(real, name)

        def build_problems(self, system_info=None):
            return real.build_problems("CPU : SSE3 = 1 | AMX_INT8 = 1 | REPACK = 1 |")

    monkeypatch.setattr(predictor_module, "load_native", lambda: AmxBuild())
    with pytest.raises(LlamaBuildError, match=r"AMX_INT8(.|\n)*scripts/llama_build.py ensure"):
        OnDevicePredictor.from_bundle(bundle_dir, n_threads=1)


@pytest.mark.parametrize(
    "history, message",
    [
        (b"Mon 08:10 @home check weather", "history is bytes: decode it to text first"),
        (None, "history is None: pass a list of bua.events.Event"),
        (42, "history is a int: pass a list"),
    ],
)
def test_wrong_history_types_say_what_to_pass(predictor, history, message):
    with pytest.raises(TypeError, match=message):
        predictor.predict(history, explain=False)


def test_arguments_are_checked_before_the_model_runs(predictor, history, bundle_dir):
    for top_k in (2.5, 0, True, "3"):
        with pytest.raises(ValueError, match="top_k must be a whole number of at least 1"):
            predictor.predict(history, top_k=top_k, explain=False)
    with pytest.raises(ValueError, match=r"n_ctx must be a whole number from 64 to 1048576, got 2147483648"):
        OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, n_ctx=2**31)
    with pytest.raises(ValueError, match="n_threads must be a whole number"):
        OnDevicePredictor.from_bundle(bundle_dir, n_threads=-1)
    with pytest.raises(ValueError, match="dry_allowed_length must be a whole number from 1"):
        OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, dry_allowed_length=0)
    with pytest.raises(ValueError, match=r"dry_multiplier must lie in \[0, 10\]"):
        OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, dry_multiplier=-1.0)
    for tolerance in (-0.1, 1.5, "0"):
        with pytest.raises(ValueError, match=r"score_tolerance must lie in \[0, 1\]"):
            OnDevicePredictor.from_bundle(bundle_dir, n_threads=1, score_tolerance=tolerance)
    array = np.array([[e.day, e.minute, e.location, e.behavior, e.week] for e in history])
    assert predictor.predict(array, explain=False).top == predictor.predict(history, explain=False).top


def _assert_same_top(got, want, step, rtol=1e-2, atol=1e-4):
    """The same top k up to float noise (llama.cpp computed the cached rows in other batches):
    equal probabilities rank by rank, and a behavior ranks differently only in a near tie, i.e.
    with the probability the fresh prediction gives it (or, leaving the top k, the k-th's)."""
    got_p = np.array([s.probability for s in got.top])
    want_p = {s.behavior: s.probability for s in want.top}
    assert np.allclose(got_p, [s.probability for s in want.top], rtol=rtol, atol=atol), step
    for s in got.top:
        ref = want_p.get(s.behavior, want.top[-1].probability)
        assert np.isclose(s.probability, ref, rtol=rtol, atol=atol), (step, s.behavior, s.probability, ref)


def test_stream_equals_fresh_predict_across_window_drops_and_users(predictor, bundle_dir, dataset):
    """stream.append evaluates only the new soft row and the question, yet predicts exactly what
    a fresh predict of the same window does: over a log longer than the window (block drops)
    and with two users' streams interleaved on one predictor."""
    limit = predictor.bundle.max_history
    log_a = list(dataset.users[0].events)[: limit + 12]
    log_b = list(dataset.users[1].events)[: len(log_a) // 5]
    assert len(log_a) == limit + 12
    reference = OnDevicePredictor.from_bundle(bundle_dir, n_threads=1)
    a = predictor.stream(log_a[:3], top_k=5, drop_block=8)
    b = predictor.stream(top_k=5)
    question = None
    for i, event in enumerate(log_a[3:], start=4):
        got = a.append(event)
        want = reference.predict(a.events, top_k=5, explain=False)
        _assert_same_top(got, want, i)
        assert got.prompt_tokens == want.prompt_tokens and got.soft_tokens == len(a.events)
        if i <= limit:
            assert a.events == log_a[:i]
            if i > 4 and (i - 1) % 5:
                question = question or a.evaluated - 1
                assert a.evaluated == 1 + question, i  # one soft row + the question
        elif i == limit + 1:  # the window overflowed: the oldest block of 8 went, all re-evaluated
            assert a.events == log_a[8:i] and a.evaluated > len(a.events)
        if i % 5 == 0:  # another user takes the context; a's next append is a full evaluation
            got_b = b.append(log_b[i // 5 - 1])
            want_b = reference.predict(b.events, top_k=5, explain=False)
            assert [s.behavior for s in got_b.top] == [s.behavior for s in want_b.top]
    assert len(a.events) <= limit


@pytest.mark.parametrize("layout", ["tiny_bundle_question_first", "tiny_bundle_predict_first",
                                    "tiny_bundle_history_in_reply"])
def test_question_first_stream_re_evaluates_only_the_new_row_and_the_turn_end(layout, request, dataset):
    """With the prediction's question before the history (every task's, or the prediction's
    only, or with the history in the reply), an append evaluates the new soft row and the few
    tokens after it (the user turn's end; one newline in the reply); predictions equal a fresh
    predict's, also after calls whose first round is another task (their opening shares only a
    prefix with the cached one)."""
    from bua.dialogue import PREDICT, round_prompt_segments

    bundle = request.getfixturevalue(layout)
    p = OnDevicePredictor.from_bundle(bundle, n_threads=1)
    reference = OnDevicePredictor.from_bundle(bundle, n_threads=1)
    assert p.template.asks_first(PREDICT)
    assert p.template.question_first == (layout == "tiny_bundle_question_first")
    after = round_prompt_segments(p.template, p.chat, PREDICT, True)[2].text
    n_after = len(p.engine.tokens(after))
    if layout == "tiny_bundle_history_in_reply":
        assert p.template.history_in_reply(PREDICT) and after == "\n" and n_after == 1
    log = list(dataset.users[2].events)[:12]
    s = p.stream(log[:3], top_k=3)
    for i, event in enumerate(log[3:], start=4):
        got = s.append(event)
        want = reference.predict(s.events, top_k=3, explain=False)
        _assert_same_top(got, want, i)
        if i > 4 and i != 8:
            assert s.evaluated == 1 + n_after, i
        if i == 7:  # another task's opening replaces the prediction's: the next append starts over
            explained = p.predict(s.events, top_k=3, explain=True)
            assert set(explained.explanation) == {"key_behaviors", "patterns", "summary"}
    assert p.predict(log, explain=False).top == reference.predict(log, explain=False).top


def test_stream_window_drops_whole_blocks_of_the_oldest_events():
    from bua.runtime.predictor import stream_window

    log = list(range(27))
    assert stream_window(log[:20], 20, 5) == log[:20]
    assert stream_window(log[:21], 20, 5) == log[5:21]
    assert stream_window(log, 20, 5) == log[10:]
    assert stream_window(log[:21], 20, 1) == log[1:21]


def test_stream_arguments_and_explanations(predictor, history):
    with pytest.raises(ValueError, match="drop_block"):
        predictor.stream(drop_block=0)
    with pytest.raises(ValueError, match="top_k"):
        predictor.stream(top_k=0)
    s = predictor.stream(history[:5], explain_every=2)
    with pytest.raises(ValueError, match="empty"):
        s.extend([])
    s.append(history[5])
    assert s.explanation == {}
    s.append(format_events([history[6]], predictor.vocab))  # an event text line
    assert set(s.explanation) == {"key_behaviors", "patterns", "summary"} and s.appended == 0
    assert s.events == history[:7]
    with pytest.raises(ValueError, match="no events yet"):
        predictor.stream().explain()


def test_choose_evaluates_the_likeliest_phrase_of_a_prefix_free_set(predictor, history):
    """`PromptEngine.choose` (the summary's trait): a phrase whose tokens begin another's is left
    out (constrained scoring refuses such a set), the rest are scored, the best is evaluated."""
    engine = predictor.engine
    engine.start(PREDICT, predictor.soft_tokens(history))
    rest = [" gaming. music.", " music."]
    assert engine.tokens(" gaming. music.")[:len(engine.tokens(" gaming."))] == engine.tokens(" gaming.")
    n = engine.session.n_past
    logp = engine.session.score_constrained([engine.tokens(p) for p in rest])["logprob"]
    want = rest[int(np.argmax(logp))]
    assert engine.choose([" gaming.", *rest, " music."]) == want
    assert engine.session.n_past == n + len(engine.tokens(want))


def test_absent_names_keep_a_name_that_a_present_one_contains():
    from types import SimpleNamespace

    from bua.runtime.engine import PromptEngine

    engine = SimpleNamespace(bundle=SimpleNamespace(vocab=SimpleNamespace(
        behaviors=["music", "live music", "gaming", "Food", "Fast Food"])))
    # "music" is part of "live music", which the history has: banning it would ban "live music"
    assert PromptEngine.absent_names(engine, {1}) == ["gaming", "Food", "Fast Food"]
    assert PromptEngine.absent_names(engine, {4}) == ["music", "live music", "gaming"]
    assert PromptEngine.absent_names(engine, range(5)) == []
