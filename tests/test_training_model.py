"""BUAModel: soft tokens at the slot, freezing per stage (sec. 3.3), training/inference
agreement, and the run directory that `load_run` reads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bua.backbones import resolve_backbone
from bua.dialogue import default_template, render_dialogue, round_prompt_segments, tokenize_segments
from bua.models.encoder import BehaviorEncoder, EncoderConfig
from bua.models.projector import Projector, ProjectorConfig, SoftTokenizer
from bua.training.collate import Example, collate
from bua.training.config import LoraSettings

torch.set_num_threads(1)
HIST = np.array([[0, 480, 1, 2], [0, 500, 2, 3], [0, 600, 2, 4], [1, 30, 0, 1]], dtype=np.int64)


def _model(arch: str = "qwen2", mode: str = "per_event", seed: int = 0, fresh_lora: bool = False,
           gradient_checkpointing: str = "auto"):
    from bua.training.model import BUAModel

    torch.manual_seed(seed)
    enc = BehaviorEncoder(EncoderConfig.tiny(10, 5))
    proj = Projector(ProjectorConfig(in_dim=32, out_dim=64, mode=mode, n_pooled_tokens=3))
    model = BUAModel.from_backbone(resolve_backbone(f"tiny-{arch}"), SoftTokenizer(enc, proj),
                                   LoraSettings(r=4, alpha=8, dropout=0.0), default_template(),
                                   gradient_checkpointing=gradient_checkpointing)
    if fresh_lora:
        return model
    with torch.no_grad():  # make LoRA non-trivial so it shows in every comparison
        for name, p in model.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def model():
    return _model()


def _example(model, tasks, answers, hist=HIST):
    segs = render_dialogue(model.template, model.chat, tasks, answers)
    tok = tokenize_segments(segs, model.tokenizer, n_soft=model.n_soft_tokens(len(hist)))
    return Example(tok, hist, tuple(tasks))


def test_freezing_per_stage_follows_sec_3_3(model):
    expect = {"stage1": {"projector"}, "stage2": {"projector", "lora"}, "stage3": {"lora"}}
    for stage, kinds in expect.items():
        model.set_stage(stage)
        got = set()
        for name, p in model.named_parameters():
            if p.requires_grad:
                assert "encoder" not in name
                got.add("projector" if name.startswith("soft_tokenizer.projector") else
                        "lora" if "lora_" in name else name)
        assert got == kinds, stage
        # the encoder and the base LLM never train
        assert not any(p.requires_grad for p in model.soft_tokenizer.encoder.parameters())
        assert not model.lm.get_input_embeddings().weight.requires_grad
    with pytest.raises(ValueError, match="unknown stage"):
        model.set_stage("stage4")
    model.train()
    assert not model.soft_tokenizer.encoder.training  # frozen encoder stays in eval mode


@pytest.mark.parametrize("arch,mode", [("qwen2", "per_event"), ("llama", "pooled")])
def test_forward_puts_soft_tokens_at_the_slot(arch, mode):
    m = _model(arch, mode)
    m.set_stage("stage2")
    ex = [_example(m, ["key_behaviors", "predict"], ["gaming a lot", "gaming"]),
          _example(m, ["predict"], ["subway"], HIST[:2])]
    batch = collate(ex, m.pad_id)
    first_ids = torch.tensor([5, 17, int(ex[1].tokens.input_ids[-2])])
    fwd = m(batch, first_ids)
    nll = fwd.nll
    # reference: build inputs_embeds by hand per dialogue, run the plain HF model with labels
    with torch.no_grad():
        soft, soft_mask = m.soft_tokenizer(batch.events, batch.events_mask)
    for i, e in enumerate(ex):
        ids = torch.from_numpy(e.tokens.input_ids)
        s0, n = e.tokens.soft_start, e.tokens.n_soft
        emb = m.lm.get_input_embeddings()(ids.clamp(min=0))
        emb[s0:s0 + n] = soft[i][soft_mask[i]]
        labels = torch.where(torch.from_numpy(e.tokens.answer_mask), ids, torch.full_like(ids, -100))
        out = m.lm(inputs_embeds=emb.unsqueeze(0), labels=labels.unsqueeze(0))
        ref = out.loss * (labels[1:] != -100).sum()
        assert nll[i].sum().item() == pytest.approx(ref.item(), rel=1e-4)
        # the distillation logits: the full LM's logits of first_ids where the predict answer starts
        predict_round = e.round_tasks.index("predict")
        first_answer = int(np.flatnonzero(e.tokens.answer_mask & (e.tokens.round_ids == predict_round))[0])
        assert int(batch.predict_starts[i, 0]) == first_answer - 1
        assert int(batch.predict_events[i, 0]) == len(e.events)
        torch.testing.assert_close(fwd.first_token_logits[i, 0], out.logits[0, first_answer - 1, first_ids],
                                   rtol=1e-4, atol=1e-4)
    # the soft tokens matter: changing the history changes the loss
    batch2 = collate([_example(m, ["predict"], ["subway"], HIST[2:4])], m.pad_id)
    assert not torch.allclose(nll[1].sum(), m(batch2).nll.sum())
    # gradients reach the projector through the LLM (stage 1 trains only the projector)
    m.set_stage("stage1")
    m(batch).nll.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in m.named_trainable())


def _count_lora_calls(model) -> list:
    calls = []
    for name, module in model.lm.named_modules():
        if name.endswith("lora_A.default"):
            module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_stage1_skips_the_fresh_lora_layers():
    """Stage 1 does not train LoRA and its B is still 0: the forward leaves the LoRA layers out
    and gives exactly the NLL of a forward through them, with the stage's freezing intact and
    gradients reaching the projector; stage 2, and a LoRA that is not zero, run them."""
    model = _model(fresh_lora=True)
    calls = _count_lora_calls(model)
    batch = collate([_example(model, ["key_behaviors", "predict"], ["gaming often", "gaming"])], model.pad_id)
    out, trainable = {}, {}
    for stage in ("stage1", "stage2"):
        model.set_stage(stage)
        trainable[stage] = {n for n, _ in model.named_trainable()}
    for stage in ("stage1", "stage2"):
        model.set_stage(stage)
        calls.clear()
        model.zero_grad(set_to_none=True)
        out[stage] = model(batch).nll
        out[stage].sum().backward()
        assert model.lora_is_inert() == (stage == "stage1")
        assert (len(calls) == 0) == (stage == "stage1"), stage
        assert {n for n, _ in model.named_trainable()} == trainable[stage]  # the stage's freezing holds
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
    assert torch.equal(out["stage1"], out["stage2"])
    with torch.no_grad():  # a LoRA that is not zero is never skipped
        next(p for n, p in model.lm.named_parameters() if "lora_B" in n).fill_(0.01)
    model.set_stage("stage1")
    calls.clear()
    model(batch)
    assert not model.lora_is_inert() and calls


def test_stage1_runs_lora_under_gradient_checkpointing():
    """Checkpointing recomputes each layer in backward, outside the forward's context: stage 1
    then keeps the (zero) LoRA path, so the recomputation matches the forward."""
    model = _model(fresh_lora=True, gradient_checkpointing="on")
    model.set_stage("stage1")
    model.train()
    assert model.gradient_checkpointing and not model.lora_is_inert()
    batch = collate([_example(model, ["predict"], ["gaming"])], model.pad_id)
    model(batch).nll.sum().backward()
    assert all(p.grad is not None for p in model.projector.parameters())


def test_build_model_gives_the_projector_the_configured_states(tmp_path):
    """`encoder.projector_states` reaches the projector build_model makes and its saved config."""
    from pathlib import Path

    from bua.models.projector import Projector
    from bua.training.build import build_model
    from bua.training.config import load_config

    tiny = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny-cpu.yaml"
    enc = BehaviorEncoder(EncoderConfig.tiny(10, 5))
    for states in ("penultimate", "final"):
        config = load_config(tiny, {"encoder.projector_states": states})
        model = build_model(config, enc, resolve_backbone("tiny-qwen2"), torch.device("cpu"))
        assert model.projector.config.states == states
        model.projector.save(tmp_path / states)
        assert Projector.load(tmp_path / states).config.states == states


def test_slot_count_mismatch_is_an_error(model):
    segs = render_dialogue(model.template, model.chat, ["predict"], ["gaming"])
    wrong = Example(tokenize_segments(segs, model.tokenizer, n_soft=2), HIST, ("predict",))
    with pytest.raises(ValueError, match=r"soft slots per dialogue \[2\] differ .* \[4\]"):
        model(collate([wrong], model.pad_id))


def test_score_candidates_equals_training_nll_of_the_answer(model):
    """The candidate's log-prob (name + end of turn, on one KV sequence) is exactly minus the
    training NLL of those answer tokens in the teacher-forced dialogue."""
    tpl, chat = model.template, model.chat
    prompt = round_prompt_segments(tpl, chat, "predict", True)
    names = ["gaming", "check weather", "subway"]
    scores = model.score_candidates(HIST, prompt, names, scoring="summed")
    from bua.events import events_from_array

    assert torch.equal(model.score_candidates(events_from_array(HIST), prompt, names, scoring="summed"), scores)
    eot = model.tokenizer(chat.end_of_turn, add_special_tokens=False)["input_ids"]
    for name, score in zip(names, scores):
        ex = _example(model, ["predict"], [name])
        with torch.no_grad():
            nll = model(collate([ex], model.pad_id)).nll[0]
        n = len(model.tokenizer(name, add_special_tokens=False)["input_ids"]) + len(eot)
        start = ex.tokens.spans[0][2]
        assert -nll[start - 1:start - 1 + n].sum().item() == pytest.approx(score.item(), abs=1e-3)


def test_padding_to_a_multiple_leaves_every_answer_nll_unchanged(model):
    """Training batches on CUDA are padded to a multiple of 64 (model.pad_to_multiple): the extra
    positions are masked out and carry no label."""
    examples = [_example(model, ["key_behaviors", "predict"], ["gaming often", "gaming"]),
                _example(model, ["predict"], ["subway"], hist=HIST[:2])]
    with torch.no_grad():
        plain = model(collate(examples, model.pad_id))
        padded = model(collate(examples, model.pad_id, pad_to_multiple=64))
    s = plain.nll.shape[1]
    assert padded.nll.shape[1] % 64 == 63 and padded.nll.shape[1] > s  # [B, S-1]
    assert torch.allclose(padded.nll[:, :s], plain.nll, atol=1e-5) and (padded.nll[:, s:] == 0).all()
    assert torch.equal(padded.loss_rounds[:, :s], plain.loss_rounds)


def test_greedy_generation_is_the_argmax_chain(model):
    tpl, chat = model.template, model.chat
    prompt = round_prompt_segments(tpl, chat, "key_behaviors", True)
    text = model.generate_answer(HIST, prompt, max_new_tokens=6)
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    ex = _example(model, ["key_behaviors"], [text])
    batch = collate([ex], model.pad_id)
    with torch.no_grad():
        embeds = model.embed(batch.input_ids, batch.soft_positions, batch.events, batch.events_mask)
        logits = model.lm(inputs_embeds=embeds).logits[0]
    start = ex.tokens.spans[0][2]
    greedy = logits[start - 1:start - 1 + len(ids)].argmax(-1).tolist()
    assert greedy == ids and len(ids) > 0


def test_bf16_autocast_resolution_and_loss_parity(model):
    from bua.dialogue import PREDICT
    from bua.training.model import cpu_has_bf16, resolve_autocast

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_autocast("auto", cpu) == cpu_has_bf16()
    assert not resolve_autocast("auto", cuda) and not resolve_autocast("off", cpu) and resolve_autocast("bf16", cpu)
    batch = collate([_example(model, [PREDICT], ["work"])], model.tokenizer.pad_token_id or 0)
    model.eval()
    with torch.no_grad():
        fp32 = model(batch).nll.sum()
        model.autocast_bf16 = True
        try:
            bf16 = model(batch)
        finally:
            model.autocast_bf16 = False
    assert bf16.nll.dtype == torch.float32  # the loss itself stays fp32
    assert float(bf16.nll.sum()) == pytest.approx(float(fp32), rel=0.05)


def _shared_prefix(model, cuts, answers):
    from bua.events import events_from_array
    from bua.training.data import SharedPrefix, shared_prefix_example
    from bua.training.dialogues import Dialogue

    history = tuple(events_from_array(HIST))
    dialogues = [Dialogue(render_dialogue(model.template, model.chat, ["predict"], [a]), history[:c], "stage2",
                          ["predict"]) for c, a in zip(cuts, answers)]
    return shared_prefix_example(SharedPrefix(dialogues), model.tokenizer, model.n_soft_tokens, {})


@pytest.mark.parametrize("arch,attn,in_reply", [("qwen2", "sdpa", False), ("llama", "sdpa", False),
                                                ("qwen2", "eager", False), ("llama", "sdpa", True)])
def test_shared_prefix_branches_equal_separate_dialogues(arch, attn, in_reply):
    """stage2.prefix_predictions: each branch of one forward pass has exactly the answer NLL of
    its own dialogue (history prefix + question + answer), also next to an ordinary example, and
    with the history in the reply (`data.history_in_reply_tasks`: a branch is the newline + answer)."""
    model = _model(arch)
    model.lm.config._attn_implementation = attn
    if in_reply:
        model.template = default_template(history_in_reply_tasks=["predict"])
    cuts, answers = [4, 2, 3], ["gaming", "check weather", "subway"]
    shared = _shared_prefix(model, cuts, answers)
    assert [b.sees - shared.tokens.soft_start for b in shared.branches] == cuts
    plain = _example(model, ["predict", "predict"], ["music", "gaming"])  # longer: padding in the batch
    first_ids = torch.tensor([5, 17, 23])
    batch = collate([shared, plain], model.pad_id)
    # the distillation reads every branch's prediction, each after its own history prefix
    assert batch.predict_events[0].tolist() == cuts and batch.predict_events[1].tolist() == [len(HIST), len(HIST), 0]
    with torch.no_grad():
        out = model(batch, first_ids)
        alone_plain = model(collate([plain], model.pad_id)).nll[0]
    assert torch.allclose(out.nll[1, :len(plain) - 1], alone_plain, atol=1e-5)
    for k, (c, a) in enumerate(zip(cuts, answers)):
        alone = _example(model, ["predict"], [a], hist=HIST[:c])
        with torch.no_grad():
            alone_out = model(collate([alone], model.pad_id), first_ids)
            ref = alone_out.nll[0]
        torch.testing.assert_close(out.first_token_logits[0, k], alone_out.first_token_logits[0, 0],
                                   atol=1e-4, rtol=1e-4)
        _, _, s0, e0 = alone.tokens.spans[0]
        _, _, s1, e1 = shared.tokens.spans[k]
        assert e1 - s1 == e0 - s0 and ref[s0 - 1:e0 - 1].sum() > 0
        assert torch.allclose(out.nll[0, s1 - 1:e1 - 1], ref[s0 - 1:e0 - 1], atol=1e-5), (arch, attn, k)
    assert sorted(set(out.loss_rounds[0][out.loss_rounds[0] >= 0].tolist())) == [0, 1, 2]


def test_shared_prefix_needs_prefix_histories():
    model = _model()
    from bua.events import events_from_array
    from bua.training.data import SharedPrefix, shared_prefix_example
    from bua.training.dialogues import Dialogue

    history = tuple(events_from_array(HIST))
    other = tuple(events_from_array(HIST[::-1]))
    d = [Dialogue(render_dialogue(model.template, model.chat, ["predict"], ["gaming"]), h, "stage2", ["predict"])
         for h in (history, other[:2])]
    with pytest.raises(ValueError, match="prefixes of the first one's"):
        shared_prefix_example(SharedPrefix(d), model.tokenizer, model.n_soft_tokens, {})


def test_generation_opening_round_moves_the_first_line_to_its_own_round(model):
    """stage2.generation_opening_round: the generate answer's first line (with its newline)
    becomes an appended round of the same task; ids, mask and the other rounds stay; under the
    round-balanced loss that line then weighs as much as each other round."""
    from bua.training.data import opening_line_round, single_token_id
    from bua.training.losses import dialogue_losses, round_losses

    newline = single_token_id(model.tokenizer, "\n")
    day = "Sun 07:00 @home gaming\nSun 08:10 @work music\nSun 09:30 @work subway"
    segs = render_dialogue(model.template, model.chat, ["patterns", "generate"], ["Sequences: none repeats.", day],
                           [None, {"day": "Sunday"}])
    plain = Example(tokenize_segments(segs, model.tokenizer, n_soft=model.n_soft_tokens(len(HIST))), HIST,
                    ("patterns", "generate"))
    split = opening_line_round(plain, newline)
    assert split.round_tasks == ("patterns", "generate", "generate")
    t, p = split.tokens, plain.tokens
    assert np.array_equal(t.input_ids, p.input_ids) and np.array_equal(t.answer_mask, p.answer_mask)

    def answer_text(example, rnd):
        tok = example.tokens
        return model.tokenizer.decode(tok.input_ids[tok.answer_mask & (tok.round_ids == rnd)])

    assert answer_text(split, 2) == "Sun 07:00 @home gaming\n"
    assert answer_text(split, 2) + answer_text(split, 1) == answer_text(plain, 1)
    assert answer_text(split, 0) == answer_text(plain, 0)
    assert [s[:2] for s in t.spans] == [(0, "patterns"), (2, "generate"), (1, "generate")]

    batch = collate([split], model.pad_id)
    with torch.no_grad():
        nll = model(batch).nll
    rounds = round_losses(nll, batch.loss_rounds[:, 1:], 3)
    opening = len(model.tokenizer("Sun 07:00 @home gaming\n", add_special_tokens=False)["input_ids"])
    assert rounds.counts[0, 2] == opening and rounds.present[0].all()
    assert dialogue_losses(rounds, "round_balanced").item() == pytest.approx(rounds.means[0].mean().item(), rel=1e-6)

    predict_only = _example(model, ["predict"], ["gaming"])
    assert opening_line_round(predict_only, newline) is predict_only


def test_end_of_turn_weights_mark_each_answer_end_and_no_prompt_end(model):
    """stage2.end_of_turn_weight reaches every answer's end of turn (a label: the answer segment
    holds the chat suffix), once per round, and none of the prompt turns' ends."""
    from bua.training.data import single_token_id
    from bua.training.losses import end_of_turn_weights

    batch = collate([_example(model, ["patterns", "predict"], ["Sequences: none repeats.", "gaming"])], model.pad_id)
    eot = single_token_id(model.tokenizer, model.chat.end_of_turn)
    marked = end_of_turn_weights(batch.labels, eot, 5.0) == 5.0
    assert sorted(batch.loss_rounds[:, 1:][marked].tolist()) == [0, 1]
    assert int((batch.input_ids == eot).sum()) > 2  # the system and user turns end with it too


def test_generation_closing_round_moves_the_last_line_and_the_end_of_turn(model):
    """stage2.generation_closing_round, after the opening round: the day's last line and the end
    of the turn become a third generate round; together the rounds are the answer."""
    from bua.training.data import closing_line_round, opening_line_round, single_token_id

    newline = single_token_id(model.tokenizer, "\n")
    lines = ["Sun 07:00 @home gaming", "Sun 08:10 @work music", "Sun 09:30 @work subway"]

    def example(day):
        segs = render_dialogue(model.template, model.chat, ["generate"], [day], [{"day": "Sunday"}])
        return Example(tokenize_segments(segs, model.tokenizer, n_soft=model.n_soft_tokens(len(HIST))), HIST,
                       ("generate",))

    def answer_text(ex, rnd):
        tok = ex.tokens
        return model.tokenizer.decode(tok.input_ids[tok.answer_mask & (tok.round_ids == rnd)])

    plain = example("\n".join(lines))
    split = closing_line_round(opening_line_round(plain, newline), newline)
    assert split.round_tasks == ("generate", "generate", "generate")
    assert np.array_equal(split.tokens.input_ids, plain.tokens.input_ids)
    assert answer_text(split, 1) == lines[0] + "\n" and answer_text(split, 0) == lines[1] + "\n"
    assert answer_text(split, 2).startswith(lines[2]) and model.chat.end_of_turn in answer_text(split, 2)
    assert answer_text(split, 1) + answer_text(split, 0) + answer_text(split, 2) == answer_text(plain, 0)
    # a single line left after the opening round is the closing line already
    two = opening_line_round(example("\n".join(lines[:2])), newline)
    assert closing_line_round(two, newline) is two
    predict_only = _example(model, ["predict"], ["gaming"])
    assert closing_line_round(predict_only, newline) is predict_only


def test_constrained_scores_renormalize_at_each_branch_of_the_names(model):
    """Constrained scoring (the runtime's default): each answer token's probability among the
    tokens that continue some candidate after the same prefix, evaluated here one prefix at a
    time on a fresh sequence; the scores are a distribution over the candidates."""
    from bua.training.inference import InferenceSession

    prompt = round_prompt_segments(model.template, model.chat, "predict", True)
    names = ["check weather", "check email", "checking", "subway", "gaming"]  # shared first tokens
    scores = model.score_candidates(HIST, prompt, names)
    assert torch.exp(scores).sum().item() == pytest.approx(1.0, abs=1e-5)
    seqs = [model.tokenizer(n + model.chat.end_of_turn, add_special_tokens=False)["input_ids"] for n in names]
    assert any(a[0] == b[0] for i, a in enumerate(seqs) for b in seqs[i + 1:])  # a real branch after the first token
    for seq, score in zip(seqs, scores):
        want = 0.0
        for j, token in enumerate(seq):
            allowed = sorted({s[j] for s in seqs if len(s) > j and s[:j] == seq[:j]})
            session = InferenceSession(model)
            session.feed_segments(prompt, HIST)
            session.feed_ids(seq[:j])
            want += torch.log_softmax(session.last_logits[allowed], 0)[allowed.index(token)].item()
        assert score.item() == pytest.approx(want, abs=1e-4)
    session = InferenceSession(model)
    session.feed_segments(prompt, HIST)
    with pytest.raises(ValueError, match="the same tokens"):
        session.score(["gaming", "gaming"])
    with pytest.raises(ValueError, match="scoring must be one of"):
        session.score(["gaming"], scoring="first")


def test_cache_keyword_follows_the_installed_transformers(model):
    """transformers renamed the forward's `past_key_values` to `cache`; a cache passed under the
    other name would be ignored (every position re-read from an empty cache)."""
    import inspect

    from bua.training.inference import cache_keyword

    assert cache_keyword(model.lm) in inspect.signature(model.lm.get_base_model().forward).parameters

    class BeforeTheRename(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return input_ids

    assert cache_keyword(BeforeTheRename()) == "past_key_values"
