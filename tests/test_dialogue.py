"""bua.dialogue: the soft-token slot contract (segments, rendering, tokenization)."""
from __future__ import annotations

import json

import pytest

from bua.chat import ChatFormat
from bua.dialogue import (
    ALL_TASKS,
    GENERATE,
    PREDICT,
    QUESTION_FIELD,
    RECONSTRUCT,
    REFLECT,
    SOFT_TOKEN_ID,
    STAGE1_TASKS,
    DialogueTemplate,
    Segment,
    answer_prefix,
    answer_segment,
    answer_suffix,
    default_template,
    dialogue_text,
    question_context,
    render_dialogue,
    round_prompt_segments,
    tokenize_segments,
)
from bua.events import Event

CHAT = ChatFormat.chatml()
TPL = default_template()
TASKS = ["key_behaviors", "patterns", "summary", "predict"]
ANSWERS = ["Frequent: subway (5).", "Recurring: subway -> payment (3x).",
           "Trait: commuter.", "gaming"]


def test_template_covers_all_tasks_and_roundtrips():
    assert set(ALL_TASKS) <= set(TPL.questions)
    assert DialogueTemplate.from_dict(json.loads(json.dumps(TPL.to_dict()))) == TPL
    assert TPL.fields(GENERATE) == ["day"] and TPL.fields(REFLECT) == ["draft"]
    assert TPL.marker in TPL.user_text(PREDICT, first=True)
    assert TPL.marker not in TPL.user_text(PREDICT, first=False)
    with pytest.raises(KeyError, match="needs context field 'day'"):
        TPL.question(GENERATE)
    with pytest.raises(KeyError, match="no question for task 'nope'"):
        TPL.question("nope")


def test_event_line_questions_hold_no_sample_the_model_could_copy():
    # the demo model answered "Sun 07:22 @location watching video" when the question showed
    # the format as 'Day HH:MM @location behavior' (training/README.md, eighth round)
    for task in (RECONSTRUCT, GENERATE):
        q = TPL.question(task, {"day": "Sunday"})
        assert "@" not in q and "HH" not in q, q
        assert all(w in q for w in ("day", "time", "place", "behavior")), q


@pytest.mark.parametrize("kwargs, msg", [
    (dict(preamble="no marker\n"), "exactly once"),
    (dict(preamble="{question} <behavior_history> {question}"), "at most once"),
    (dict(preamble="{question} <behavior_history>", version=1), "needs dialogue template version 2"),
    (dict(preamble="<behavior_history>\n{question}"), "must precede the marker"),
    (dict(questions={"predict": "x <behavior_history>"}), "contains the marker"),
    (dict(system="<behavior_history>"), "system prompt"),
    (dict(marker=""), "may not be empty"),
])
def test_template_validation(kwargs, msg):
    d = dict(system="s", questions={"predict": "q"})
    d.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        DialogueTemplate(**d)


def test_canonical_rendering_structure():
    segs = render_dialogue(TPL, CHAT, TASKS, ANSWERS)
    assert [s.kind for s in segs].count("soft") == 1 and segs[1].kind == "soft"
    before, after = TPL.preamble.split(TPL.marker)
    assert segs[0].text == (CHAT.bos + CHAT.system_prefix + TPL.system + CHAT.system_suffix
                            + CHAT.user_prefix + before)
    assert segs[2].text == after + TPL.questions["key_behaviors"] + CHAT.user_suffix \
        + CHAT.assistant_prefix
    answers = [s for s in segs if s.is_answer]
    assert [s.text for s in answers] == [a + CHAT.assistant_suffix for a in ANSWERS]
    assert [(s.round, s.task) for s in answers] == list(enumerate(TASKS))
    assert segs[4].text == CHAT.user_prefix + TPL.questions["patterns"] + CHAT.user_suffix \
        + CHAT.assistant_prefix
    # the text equals the chat format's rendering with the marker in the first user turn
    turns = [(TPL.user_text(t, i == 0), a) for i, (t, a) in enumerate(zip(TASKS, ANSWERS))]
    assert dialogue_text(segs) == CHAT.render(TPL.system, turns)


def test_question_first_template_puts_the_question_before_the_history():
    qf = default_template(question_first=True)
    assert qf.question_first and not TPL.question_first
    assert DialogueTemplate.from_dict(json.loads(json.dumps(qf.to_dict()))) == qf
    # the text after the soft slot is the same for every task: a streamed event re-evaluates it only
    afters = set()
    for task in (PREDICT, "key_behaviors", GENERATE):
        ctx = {"day": "Sunday"} if task == GENERATE else None
        head, soft, after = round_prompt_segments(qf, CHAT, task, True, 0, ctx)
        assert soft.kind == "soft" and head.text.endswith(qf.question(task, ctx) + "\nBehavior history: ")
        afters.add(after.text)
    assert afters == {"\n" + CHAT.user_suffix + CHAT.assistant_prefix}
    segs = render_dialogue(qf, CHAT, TASKS, ANSWERS)
    turns = [(qf.user_text(t, i == 0), a) for i, (t, a) in enumerate(zip(TASKS, ANSWERS))]
    assert dialogue_text(segs) == CHAT.render(qf.system, turns)
    assert turns[0][0] == TPL.questions["key_behaviors"] + "\n" + TPL.preamble
    assert QUESTION_FIELD not in dialogue_text(segs)
    # later rounds are as in the history-first layout
    assert segs[3:] == render_dialogue(TPL, CHAT, TASKS, ANSWERS)[3:]
    # a version-1 template (bundles written before the field existed) still reads
    assert DialogueTemplate.from_dict({**TPL.to_dict(), "version": 1}).preamble == TPL.preamble
    with pytest.raises(ValueError, match="unsupported dialogue template version 6"):
        DialogueTemplate.from_dict({**TPL.to_dict(), "version": 6})


def test_question_first_tasks_ask_first_only_in_their_own_first_round():
    pf = default_template(question_first_tasks=[PREDICT])
    assert pf.asks_first(PREDICT) and not pf.asks_first("key_behaviors") and not pf.question_first
    assert DialogueTemplate.from_dict(json.loads(json.dumps(pf.to_dict()))) == pf
    head, soft, after = round_prompt_segments(pf, CHAT, PREDICT, True)
    want_head, _, want_after = round_prompt_segments(default_template(question_first=True), CHAT, PREDICT, True)
    assert (head, soft, after) == (want_head, soft, want_after)  # as if every task asked first
    # another task's dialogue, and every later round, are the history-first layout's
    assert render_dialogue(pf, CHAT, TASKS, ANSWERS) == render_dialogue(TPL, CHAT, TASKS, ANSWERS)
    assert render_dialogue(pf, CHAT, [PREDICT], ["gaming"])[2:] == render_dialogue(
        default_template(question_first=True), CHAT, [PREDICT], ["gaming"])[2:]
    # a version-2 template (no such tasks) still reads; the field needs version 3
    assert DialogueTemplate.from_dict({**TPL.to_dict(), "version": 2}).question_first_tasks == ()
    with pytest.raises(ValueError, match="needs dialogue template version 3"):
        DialogueTemplate.from_dict({**pf.to_dict(), "version": 2})
    with pytest.raises(ValueError, match="tasks without a question: nap"):
        default_template(question_first_tasks=["nap"])
    with pytest.raises(ValueError, match="redundant"):
        default_template(question_first=True, question_first_tasks=[PREDICT])


def test_history_in_reply_tasks_open_the_reply_with_the_history():
    hr = default_template(history_in_reply_tasks=[PREDICT])
    assert hr.history_in_reply(PREDICT) and hr.asks_first(PREDICT) and not hr.history_in_reply("key_behaviors")
    assert DialogueTemplate.from_dict(json.loads(json.dumps(hr.to_dict()))) == hr
    head, soft, after = round_prompt_segments(hr, CHAT, PREDICT, True)
    # the user turn is the question; the reply opens with the history and the answer follows its newline
    assert head.text.endswith(CHAT.user_prefix + hr.questions[PREDICT] + CHAT.user_suffix + CHAT.assistant_prefix
                              + "Behavior history: ")
    assert soft.kind == "soft" and after.text == "\n"
    segs = render_dialogue(hr, CHAT, [PREDICT], ["gaming"])
    assert dialogue_text(segs) == CHAT.render(hr.system, [(hr.questions[PREDICT], TPL.preamble + "gaming")])
    assert hr.user_text(PREDICT, True) == hr.questions[PREDICT]
    # other tasks' dialogues, and the prediction round after the understanding rounds, keep their layout
    assert render_dialogue(hr, CHAT, TASKS, ANSWERS) == render_dialogue(TPL, CHAT, TASKS, ANSWERS)
    # a version-3 template (no such tasks) still reads; the field needs version 4
    assert DialogueTemplate.from_dict({**TPL.to_dict(), "version": 3}).history_in_reply_tasks == ()
    with pytest.raises(ValueError, match="needs dialogue template version 4"):
        DialogueTemplate.from_dict({**hr.to_dict(), "version": 3})
    with pytest.raises(ValueError, match="tasks without a question: nap"):
        default_template(history_in_reply_tasks=["nap"])
    with pytest.raises(ValueError, match="cannot be combined"):
        default_template(question_first=True, history_in_reply_tasks=[PREDICT])
    with pytest.raises(ValueError, match="both question_first_tasks and history_in_reply_tasks: predict"):
        default_template(question_first_tasks=[PREDICT], history_in_reply_tasks=[PREDICT])
    with pytest.raises(ValueError, match="text after the marker"):
        DialogueTemplate(system="s", questions={PREDICT: "q"}, preamble="History: " + TPL.marker,
                         history_in_reply_tasks=(PREDICT,))


def test_history_in_reply_for_every_opening_round_moves_only_the_first_turn():
    """The demo config's layout: every stage-2 dialogue's first reply opens with the history;
    the rounds after it are the history-first layout's."""
    hr = default_template(history_in_reply_tasks=[PREDICT, "key_behaviors", GENERATE])
    segs = render_dialogue(hr, CHAT, TASKS, ANSWERS)
    turns = [(hr.user_text(t, i == 0), a) for i, (t, a) in enumerate(zip(TASKS, ANSWERS))]
    turns[0] = (hr.questions["key_behaviors"], TPL.preamble + ANSWERS[0])
    assert dialogue_text(segs) == CHAT.render(hr.system, turns)
    assert segs[3:] == render_dialogue(TPL, CHAT, TASKS, ANSWERS)[3:]
    # the runtime's pieces, round by round with the answers between, are the same text
    pieces = round_prompt_segments(hr, CHAT, TASKS[0], True, 0)
    for k, (task, answer) in enumerate(zip(TASKS, ANSWERS)):
        if k:
            pieces += round_prompt_segments(hr, CHAT, task, False, k)
        pieces.append(answer_segment(answer, CHAT, k, task))
    assert dialogue_text(pieces) == dialogue_text(segs)
    ctx = {"day": "Sunday"}
    head, soft, after = round_prompt_segments(hr, CHAT, GENERATE, True, 0, ctx)
    assert head.text.endswith(hr.question(GENERATE, ctx) + CHAT.user_suffix + CHAT.assistant_prefix
                              + "Behavior history: ") and after.text == "\n"


def test_history_in_reply_tokenizes_as_the_chat_template_with_the_marker_in_the_reply(smol_tok):
    hr = default_template(history_in_reply_tasks=[PREDICT])
    segs = render_dialogue(hr, CHAT, [PREDICT], ["watching video"])
    full = smol_tok.apply_chat_template([{"role": "system", "content": hr.system},
                                         {"role": "user", "content": hr.user_text(PREDICT, True)},
                                         {"role": "assistant", "content": hr.preamble + "watching video"}],
                                        tokenize=False)
    assert full == dialogue_text(segs, hr.marker)
    before, after = full.split(hr.marker)
    tok = tokenize_segments(segs, smol_tok)
    assert tok.input_ids.tolist() == (smol_tok(before, add_special_tokens=False)["input_ids"] + [SOFT_TOKEN_ID]
                                      + smol_tok(after, add_special_tokens=False)["input_ids"])
    (_, _, s, e), = tok.spans
    assert s == tok.soft_start + 2  # the answer starts right after the soft row and one newline


def test_prompt_stops_after_assistant_prefix():
    segs = render_dialogue(TPL, CHAT, TASKS, ANSWERS[:2] + [None, None])
    assert segs[-1].text.endswith(CHAT.assistant_prefix) and not segs[-1].is_answer
    assert segs[-1].task == "summary"
    assert sum(s.is_answer for s in segs) == 2
    with pytest.raises(ValueError, match="4 tasks but 3 answers"):
        render_dialogue(TPL, CHAT, TASKS, ANSWERS[:3])


def test_incremental_pieces_equal_full_rendering():
    history = [Event(0, 600, 0, 0), Event(2, 700, 1, 1)]
    tasks = TASKS[:3] + [GENERATE]
    answers = ANSWERS[:3] + ["Thu 08:00 @home gaming"]
    ctx = [None, None, None, question_context(GENERATE, history, ["gaming", "reading"])]
    assert ctx[3] == {"day": "Thursday", "behaviors": "gaming, reading"}
    full = render_dialogue(TPL, CHAT, tasks, answers, ctx)
    pieces = []
    for k, (t, a) in enumerate(zip(tasks, answers)):
        pieces += round_prompt_segments(TPL, CHAT, t, first=k == 0, round=k, context=ctx[k])
        pieces.append(Segment("text", a + answer_suffix(CHAT), True, k, t))
    assert pieces == full
    assert answer_segment("x", CHAT, 1, "patterns") == Segment("text", "x<|im_end|>\n", True, 1,
                                                                "patterns")
    assert "(Thursday)" in dialogue_text(full)


class _CharTok:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_tokenize_segments_masks_and_spans():
    segs = render_dialogue(TPL, CHAT, TASKS, ANSWERS)
    tok = tokenize_segments(segs, _CharTok(), n_soft=3)
    text = dialogue_text(segs, marker="")
    assert len(tok) == len(text) + 3
    assert (tok.input_ids[tok.soft_start:tok.soft_start + 3] == SOFT_TOKEN_ID).all()
    assert (tok.input_ids == SOFT_TOKEN_ID).sum() == 3
    assert [(r, t) for r, t, _, _ in tok.spans] == list(enumerate(TASKS))
    for (r, t, s, e), a in zip(tok.spans, ANSWERS):
        assert "".join(map(chr, tok.input_ids[s:e])) == a + CHAT.assistant_suffix
        assert tok.answer_mask[s:e].all() and (tok.round_ids[s:e] == r).all()
    assert tok.answer_mask.sum() == sum(e - s for _, _, s, e in tok.spans)
    with pytest.raises(ValueError, match="no soft segment"):
        tokenize_segments([Segment("text", "a")], _CharTok())


@pytest.mark.parametrize("tasks, answers", [
    (TASKS, ANSWERS),
    ([PREDICT], ["watching video"]),
    (["reconstruct"], ["Mon 08:10 @home check weather\nMon 08:30 @transit subway"]),
])
def test_tokenize_segments_equals_chat_template_split_at_marker(smol_tok, tasks, answers):
    segs = render_dialogue(TPL, CHAT, tasks, answers)
    msgs = [{"role": "system", "content": TPL.system}]
    for i, (t, a) in enumerate(zip(tasks, answers)):
        msgs += [{"role": "user", "content": TPL.user_text(t, i == 0)},
                 {"role": "assistant", "content": a}]
    full = smol_tok.apply_chat_template(msgs, tokenize=False)
    assert full == dialogue_text(segs, TPL.marker)
    before, after = full.split(TPL.marker)
    expect = (smol_tok(before, add_special_tokens=False)["input_ids"] + [SOFT_TOKEN_ID]
              + smol_tok(after, add_special_tokens=False)["input_ids"])
    cache: dict = {}
    tok = tokenize_segments(segs, smol_tok, cache=cache)
    assert tok.input_ids.tolist() == expect
    assert tokenize_segments(segs, smol_tok, cache=cache).input_ids.tolist() == expect
    eot = smol_tok.convert_tokens_to_ids(CHAT.end_of_turn)
    for _, _, s, e in tok.spans:  # each answer span: answer ids, then <|im_end|>, "\n"
        assert tok.input_ids[e - 2] == eot


def test_stage1_tasks_each_can_open_a_dialogue():
    for t in STAGE1_TASKS:
        segs = render_dialogue(TPL, CHAT, [t], ["x"])
        assert [s.kind for s in segs] == ["text", "soft", "text", "text"]


# ---------------------------------------------------------------------- builders
@pytest.fixture(scope="module")
def sim_bits():
    from bua.labels import Labeler
    from bua.samples import generation_samples, prediction_samples
    from bua.simulate import simulate

    ds = simulate(12, 14, seed=9)
    return ds, Labeler(ds), prediction_samples(ds, stride=60), generation_samples(
        ds, max_per_user=1)


def test_stage1_dialogues(sim_bits):
    from bua.training.dialogues import stage1_dialogues

    ds, lab, ps, _ = sim_bits
    ds_ = stage1_dialogues(ps[0], lab)
    assert [d.tasks for d in ds_] == [[t] for t in STAGE1_TASKS]
    for d in ds_:
        assert d.kind == "stage1" and d.history == ps[0].history and d.user_id == ps[0].user_id
        assert [s.kind for s in d.segments].count("soft") == 1
        assert d.segments[-1].is_answer and d.segments[-1].text == d.answers[0] + "<|im_end|>\n"


def test_stage2_prediction_dialogue(sim_bits):
    from bua.training.dialogues import stage2_dialogue

    ds, lab, ps, _ = sim_bits
    s = ps[1]
    d = stage2_dialogue(s, lab)
    assert d.tasks == ["key_behaviors", "patterns", "summary", "predict"]
    assert d.kind == "stage2" and d.target_behavior == s.target.behavior
    assert d.answers[-1] == ds.vocab.behaviors[s.target.behavior]
    ans = [seg for seg in d.segments if seg.is_answer]
    assert [a.round for a in ans] == [0, 1, 2, 3]
    assert ans[-1].text == d.answers[-1] + CHAT.assistant_suffix
    fast = stage2_dialogue(s, lab, explain=False)
    assert fast.tasks == ["predict"] and [x.kind for x in fast.segments] == [
        "text", "soft", "text", "text"]
    assert TPL.questions["predict"] in fast.segments[2].text
    with pytest.raises(TypeError, match="GenerationSample"):
        stage2_dialogue(s, lab, final="generate")
    with pytest.raises(ValueError, match="final must be"):
        stage2_dialogue(s, lab, final="nope")


def test_stage2_generation_dialogue(sim_bits):
    from bua.events import DAY_NAMES
    from bua.textformat import parse_events
    from bua.training.dialogues import stage2_dialogue

    ds, lab, _, gs = sim_bits
    g = gs[0]
    d = stage2_dialogue(g, lab, final="generate")
    assert d.tasks[-1] == "generate" and d.target_events == g.target_day
    got = parse_events(d.answers[-1], ds.vocab, week=g.target_day[0].week)
    assert got == list(g.target_day)
    assert f"({DAY_NAMES[g.target_day[0].day]})" in d.text()
    # the runtime writes the answer's opening itself: it must be how every trained answer starts
    assert d.answers[-1].startswith(answer_prefix(GENERATE, g.history))


def test_answer_prefix_names_the_next_day_only_for_generation():
    history = [Event(0, 600, 0, 0), Event(6, 700, 1, 1)]  # ends on a Sunday
    assert answer_prefix(GENERATE, history) == "Mon "
    assert answer_prefix(PREDICT, history) == "" and answer_prefix("summary", history) == ""
    with pytest.raises(ValueError, match="non-empty history"):
        answer_prefix(GENERATE, [])


def test_answer_prefix_tokens_continue_into_the_trained_answer(smol_tok):
    # Prefilled on its own, the prefix must give the tokens the trained answer starts with,
    # or the model continues from a token sequence it never saw.
    day = "Mon 00:13 @home sleep tracking\nMon 09:33 @home alarm clock"
    prefix = answer_prefix(GENERATE, [Event(6, 700, 1, 1)])
    ids = lambda text: smol_tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert ids(prefix) + ids(day[len(prefix):]) == ids(day)


def test_stage3_dialogue(sim_bits):
    from bua.training.dialogues import stage3_dialogue

    ds, lab, ps, _ = sim_bits
    d = stage3_dialogue(ps[2], lab)
    draft, answer = lab.reflection(ps[2])
    assert d.tasks == ["reflect"] and d.kind == "stage3" and d.answers == [answer]
    assert "Draft: " + draft in d.segments[2].text
    assert answer.startswith("Issues: ") and "\nCorrected: Trait: " in answer


def test_generation_names_end_the_generate_question_with_the_histories_behaviors():
    gn = default_template(generation_names=True)
    assert DialogueTemplate.from_dict(json.loads(json.dumps(gn.to_dict()))) == gn
    assert gn.fields(GENERATE) == ["day", "behaviors"] and TPL.fields(GENERATE) == ["day"]
    history = [Event(0, 600, 0, 2), Event(0, 700, 1, 0), Event(1, 500, 0, 0), Event(1, 900, 0, 1)]
    names = ["gaming", "reading", "commute"]
    ctx = question_context(GENERATE, history, names)
    # most frequent first; ties in order of first appearance
    assert ctx["behaviors"] == "gaming, commute, reading"
    assert gn.question(GENERATE, ctx).endswith("The history's behaviors: gaming, commute, reading.")
    assert gn.question(GENERATE, ctx).startswith(TPL.question(GENERATE, ctx))
    # other tasks' questions are unchanged
    assert {t: q for t, q in gn.questions.items() if t != GENERATE} == {
        t: q for t, q in TPL.questions.items() if t != GENERATE}
    with pytest.raises(KeyError, match="needs context field 'behaviors'"):
        gn.question(GENERATE, {"day": "Tuesday"})
    # a version-4 template without the field still reads; the field needs version 5
    assert DialogueTemplate.from_dict({**TPL.to_dict(), "version": 4}).questions == TPL.questions
    with pytest.raises(ValueError, match="needs dialogue template version 5"):
        DialogueTemplate.from_dict({**gn.to_dict(), "version": 4})
