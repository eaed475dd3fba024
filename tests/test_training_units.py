"""Unit tests of the training building blocks: config loading, losses (Eq. 3/5), App. J task
weighting, the App. F schedule and the collator."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bua.training.config import ConfigError, TrainConfig, config_from_dict, load_config
from bua.training.losses import dialogue_losses, end_of_turn_weights, round_losses, token_nll
from bua.training.schedule import cosine_with_warmup, lr_at, warmup_steps
from bua.training.task_weighting import TaskWeighter

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


# ---------------------------------------------------------------------------- config
def test_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stage2:\n  loss: token\n  lr: 1e-4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "'stage2.lr'" in msg
    assert "valid keys:" in msg and "global_batch_size" in msg and "optimizer" in msg


def test_bad_value_names_field_and_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stage2:\n  loss: sideways\n")
    with pytest.raises(ConfigError, match=r"stage2.loss' = 'sideways' is not one of"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'stage1.micro_batch_size' must be an integer, got 'x'"):
        config_from_dict({"stage1": {"micro_batch_size": "x"}})
    with pytest.raises(ConfigError, match=r"global_batch_size.*multiple of micro_batch_size"):
        config_from_dict({"stage1": {"global_batch_size": 10, "micro_batch_size": 4}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"'stage2.micro_batch_overhead' = -1 must be 0 or positive"):
        config_from_dict({"stage2": {"micro_batch_overhead": -1}})
    with pytest.raises(ConfigError, match=r"'model.pad_to_multiple' = -8 must be >= 0"):
        config_from_dict({"model": {"pad_to_multiple": -8}})
    with pytest.raises(ConfigError, match=r"'data.question_first_tasks' = \['nap'\] names unknown tasks"):
        config_from_dict({"data": {"question_first_tasks": ["nap"]}})
    with pytest.raises(ConfigError, match="redundant with data.question_first"):
        config_from_dict({"data": {"question_first": True, "question_first_tasks": ["predict"]}})
    assert config_from_dict({"data": {"question_first_tasks": ["predict"]}}).data.question_first_tasks == ["predict"]
    with pytest.raises(ConfigError, match=r"'data.history_in_reply_tasks' = \['nap'\] names unknown tasks"):
        config_from_dict({"data": {"history_in_reply_tasks": ["nap"]}})
    with pytest.raises(ConfigError, match="cannot be combined with data.question_first"):
        config_from_dict({"data": {"question_first": True, "history_in_reply_tasks": ["predict"]}})
    with pytest.raises(ConfigError, match=r"also in data.question_first_tasks: \['predict'\]"):
        config_from_dict({"data": {"question_first_tasks": ["predict"], "history_in_reply_tasks": ["predict"]}})
    data = config_from_dict({"data": {"history_in_reply_tasks": ["predict"]}}).data
    assert data.history_in_reply_tasks == ["predict"] and data.template().history_in_reply("predict")


def test_stage_optimizer_inherits_top_level_key_by_key():
    cfg = config_from_dict({"optimizer": {"lr": 2e-4, "min_lr": 1e-5},
                            "stage1": {"optimizer": {"lr": "1e-3"}}})
    assert cfg.stage1.optimizer.lr == 1e-3 and cfg.stage1.optimizer.min_lr == 1e-5
    assert cfg.stage2.optimizer.lr == 2e-4 and cfg.stage3.optimizer.warmup_ratio == 0.03


def test_defaults_are_the_paper_settings():
    cfg = TrainConfig()
    opt = cfg.stage2.optimizer
    assert (opt.lr, opt.initial_lr, opt.min_lr, opt.warmup_ratio) == (5e-5, 1e-6, 1e-6, 0.03)
    assert cfg.seed == 42 and cfg.stage2.global_batch_size == 96 and cfg.stage2.epochs == 3
    assert cfg.stage2.loss == "round_balanced"


def test_paper_config_matches_appendix_f():
    cfg = load_config(CONFIGS / "qwen2.5-7b-8xa100.yaml")
    for name in ("stage1", "stage2", "stage3"):
        stage = cfg.stage(name)
        assert stage.global_batch_size == 96 and stage.epochs == 3
        o = stage.optimizer
        assert (o.lr, o.initial_lr, o.min_lr, o.warmup_ratio) == (5e-5, 1e-6, 1e-6, 0.03)
    assert cfg.seed == 42 and cfg.model.dtype == "bfloat16" and cfg.model.gradient_checkpointing == "on"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(path)


def test_overrides_use_dotted_keys():
    cfg = load_config(CONFIGS / "tiny-cpu.yaml", {"stage2.loss": "token", "seed": 7})
    assert cfg.stage2.loss == "token" and cfg.seed == 7


# ---------------------------------------------------------------------------- losses
def _rounds_example():
    # dialogue 0: round 0 has 4 tokens of loss 1, round 1 has 1 token of loss 5
    # dialogue 1: round 0 only, 2 tokens of loss 2 and 4
    nll = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 5.0], [2.0, 4.0, 0.0, 0.0, 0.0, 0.0]])
    rounds = torch.tensor([[0, 0, 0, 0, -1, 1], [0, 0, -1, -1, -1, -1]])
    return nll, rounds


def test_round_balanced_is_eq5_and_token_is_eq3():
    nll, rounds = _rounds_example()
    r = round_losses(nll, rounds, 2)
    assert r.counts.tolist() == [[4, 1], [2, 0]]
    balanced = dialogue_losses(r, "round_balanced")
    token = dialogue_losses(r, "token")
    assert balanced.tolist() == pytest.approx([(1.0 + 5.0) / 2, 3.0])  # mean of round means
    assert token.tolist() == pytest.approx([(4 * 1.0 + 5.0) / 5, 3.0])  # mean over tokens
    # Eq. 4: token-level = sum_i T_i/sum T * loss_i ; Eq. 5 weights W_i = sum T / (N T_i)
    w = torch.tensor([[5 / (2 * 4), 5 / (2 * 1)], [1.0, 1.0]])
    assert dialogue_losses(r, "token", w).tolist() == pytest.approx(balanced.tolist())


def test_round_weights_scale_rounds():
    nll, rounds = _rounds_example()
    r = round_losses(nll, rounds, 2)
    w = torch.tensor([[1.0, 2.0], [0.5, 9.0]])
    assert dialogue_losses(r, "round_balanced", w).tolist() == pytest.approx([(1 + 10) / 2, 1.5])
    with pytest.raises(ValueError, match="unknown loss mode"):
        dialogue_losses(r, "mean")


def test_token_weights_scale_a_token_within_its_round():
    """A weighted token counts w times in its round's sum; the round's divisor stays its length."""
    nll, rounds = _rounds_example()
    labels = torch.tensor([[0, 7, 7, 7, 9, -100, 9], [0, 7, 9, -100, -100, -100, -100]])  # 9 = end of turn
    weights = end_of_turn_weights(labels, 9, 3.0)
    assert weights.tolist() == [[1, 1, 1, 3, 1, 3], [1, 3, 1, 1, 1, 1]]
    r = round_losses(nll, rounds, 2, weights)
    assert r.counts.tolist() == [[4, 1], [2, 0]]
    assert r.sums.tolist() == [[1 + 1 + 1 + 3, 15], [2 + 12, 0]]
    assert dialogue_losses(r, "round_balanced").tolist() == pytest.approx([(6 / 4 + 15) / 2, 14 / 2])
    with pytest.raises(ValueError, match="token_weights"):
        round_losses(nll, rounds, 2, weights[:, :3])


def test_token_nll_matches_cross_entropy_and_ignores_unlabelled():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 3, 4, -100, 1], [-100, -100, 2, 2, -100]])
    nll = token_nll(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1),
                                            ignore_index=-100, reduction="sum")
    assert nll.sum().item() == pytest.approx(ref.item(), rel=1e-6)
    assert nll[0, 2].item() == 0.0 and nll.shape == (2, 4)


def test_round_balanced_gradient_gives_short_rounds_equal_weight():
    # one dialogue, a 100-token round and a 1-token round: with Eq. 5 both rounds' tokens
    # together get the same total gradient mass; with Eq. 3 the short round gets 1/101.
    x = torch.zeros(1, 101, requires_grad=True)
    rounds = torch.tensor([[0] * 100 + [1]])
    for mode, short_share in (("round_balanced", 0.5), ("token", 1 / 101)):
        x.grad = None
        dialogue_losses(round_losses(x + 1.0, rounds, 2), mode).sum().backward()
        assert x.grad[0, 100].item() == pytest.approx(short_share)
        assert x.grad[0, :100].sum().item() == pytest.approx(1 - short_share)


# ---------------------------------------------------------------------------- App. J
def test_task_weighting_follows_appendix_j():
    tw = TaskWeighter(ema_decay=0.5, alpha=1.0)
    tw.update({"predict": 2.0, "generate": 4.0})
    assert tw.weights() == pytest.approx({"predict": 1.0, "generate": 1.0})
    tw.update({"predict": 2.0, "generate": 1.0})  # generate falls fast, predict stays
    r_p, r_g = 2.0 / 2.0, 2.5 / 4.0  # EMA 0.5*4 + 0.5*1 = 2.5
    r_bar = (r_p + r_g) / 2
    s_p, s_g = r_p / r_bar, r_g / r_bar  # stated intent: slower tasks get larger values
    w = tw.weights()
    assert w["predict"] == pytest.approx(s_p / (s_p + s_g) * 2)
    assert w["generate"] == pytest.approx(s_g / (s_p + s_g) * 2)
    assert w["predict"] > 1 > w["generate"]  # the slower task gets the larger weight
    tw2 = TaskWeighter(ema_decay=0.5, alpha=2.0)
    tw2.load_state_dict(tw.state_dict())
    assert tw2.alpha == 1.0 and tw2.weights() == pytest.approx(w)
    printed = TaskWeighter(ema_decay=0.5, alpha=1.0, form="as_printed")
    printed.load_state_dict({**tw.state_dict(), "form": "as_printed"})
    wp = printed.weights()
    assert wp["predict"] == pytest.approx((r_bar / r_p) / (r_bar / r_p + r_bar / r_g) * 2)
    assert wp["predict"] < 1 < wp["generate"]


def test_task_weighting_zero_initial_loss_gets_weight_one():
    tw = TaskWeighter(alpha=3.0)
    tw.update({"a": 0.0, "b": 1.0, "c": 2.0})
    tw.update({"a": 0.5, "b": 0.5, "c": 2.0})
    w = tw.weights()
    assert w["a"] == 1.0 and w["b"] + w["c"] == pytest.approx(2.0) and w["c"] > w["b"]


# ---------------------------------------------------------------------------- schedule
def test_schedule_warms_up_from_initial_and_decays_to_min():
    cfg = TrainConfig().stage2.optimizer  # 5e-5 peak, 1e-6 initial/min, 3% warm-up
    total = 1000
    warm = warmup_steps(cfg, total)
    assert warm == 30
    assert lr_at(0, cfg, total) == pytest.approx(1e-6)
    assert lr_at(warm, cfg, total) == pytest.approx(5e-5)
    assert lr_at(total, cfg, total) == pytest.approx(1e-6)
    mid = warm + (total - warm) // 2
    cosine = 0.5 * (1 + math.cos(math.pi * ((mid - warm) / (total - warm))))
    assert lr_at(mid, cfg, total) == pytest.approx(1e-6 + (5e-5 - 1e-6) * cosine)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=123.0)
    sched = cosine_with_warmup(opt, cfg, total)
    seen = []
    for step in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(1e-6) and max(seen) == pytest.approx(5e-5)
    assert all(a <= b + 1e-12 for a, b in zip(seen[:warm], seen[1 : warm + 1]))
    assert all(a >= b - 1e-12 for a, b in zip(seen[warm:-1], seen[warm + 1 :]))


# ---------------------------------------------------------------------------- collate
def test_collate_pads_marks_soft_slots_and_answer_rounds():
    from transformers import AutoTokenizer

    from bua.backbones import resolve_backbone
    from bua.chat import ChatFormat
    from bua.dialogue import SOFT_TOKEN_ID, TokenizedDialogue, default_template, render_dialogue, tokenize_segments
    from bua.training.collate import Example, collate

    tok = AutoTokenizer.from_pretrained(str(resolve_backbone("tiny-qwen2")))
    chat, tpl = ChatFormat.from_tokenizer(tok), default_template()
    long = tokenize_segments(
        render_dialogue(tpl, chat, ["key_behaviors", "predict"], ["gaming often", "gaming"]), tok, n_soft=3
    )
    short = tokenize_segments(render_dialogue(tpl, chat, ["predict"], ["subway"]), tok, n_soft=2)
    events = np.array([[0, 480, 1, 2], [0, 500, 2, 3], [0, 600, 2, 4]])
    batch = collate(
        [Example(long, events, ("key_behaviors", "predict")), Example(short, events[:2], ("predict",))], pad_id=7
    )
    assert batch.input_ids.shape == (2, len(long)) and batch.n_rounds == 2
    assert batch.soft_positions.sum(1).tolist() == [3, 2]
    assert (batch.input_ids[batch.soft_positions] == 7).all()
    assert batch.attention_mask[1].sum().item() == len(short)
    assert batch.events_mask.tolist() == [[True] * 3, [True, True, False]]
    # labels exactly at answer positions, with their round; the end of turn is learned
    ans = torch.from_numpy(long.answer_mask)
    assert torch.equal(batch.labels[0] != -100, ans)
    assert batch.labels[0][ans].tolist() == long.input_ids[long.answer_mask].tolist()
    assert set(batch.loss_rounds[0][ans].tolist()) == {0, 1}
    eot = tok(chat.end_of_turn, add_special_tokens=False)["input_ids"][0]
    assert eot in batch.labels[1].tolist()
    assert (batch.loss_rounds[1][len(short) :] == -1).all() and (batch.labels[1][len(short) :] == -100).all()
    assert SOFT_TOKEN_ID not in batch.input_ids.tolist()[0]
    keep = short.input_ids != SOFT_TOKEN_ID  # a dialogue whose soft slot went missing
    broken = TokenizedDialogue(
        short.input_ids[keep], short.answer_mask[keep], short.round_ids[keep], short.soft_start, 2, short.spans
    )
    with pytest.raises(ValueError, match="0 soft positions but n_soft=2"):
        Example(broken, events[:2], ("predict",))
    # padded to a multiple of 64: only padding is added (no labels, no attention, no soft slots)
    examples = [Example(long, events, ("key_behaviors", "predict")), Example(short, events[:2], ("predict",))]
    padded = collate(examples, pad_id=7, pad_to_multiple=64)
    s = len(long)
    assert padded.input_ids.shape[1] == -(-s // 64) * 64 > s
    for name in ("input_ids", "attention_mask", "soft_positions", "labels", "loss_rounds"):
        assert torch.equal(getattr(padded, name)[:, :s], getattr(batch, name)), name
    assert (padded.attention_mask[:, s:] == 0).all() and (padded.labels[:, s:] == -100).all()
    assert padded.n_tokens == batch.n_tokens and torch.equal(padded.predict_starts, batch.predict_starts)
    with pytest.raises(ValueError, match="pad_to_multiple must be >= 1"):
        collate(examples, pad_id=7, pad_to_multiple=0)


def _padded_cost(lengths, runs, overhead, multiple):
    return sum(len(run) * -(-max(lengths[i] for i in run) // multiple) * multiple + overhead for run in runs)


@pytest.mark.parametrize("seed", range(6))
def test_length_groups_is_the_cheapest_split_of_the_longest_first_order(seed):
    from itertools import combinations

    from bua.training.collate import length_groups

    rng = np.random.default_rng(seed)
    lengths = rng.choice([90, 93, 280, 300, 450, 600], size=8).tolist()
    multiple = (1, 32)[seed % 2]
    cap, overhead = 4 * -(-max(lengths) // multiple) * multiple, 100
    runs = length_groups(lengths, cap, overhead, multiple)
    order = sorted(range(8), key=lambda i: (-lengths[i], i))
    assert [i for run in runs for i in run] == order  # every dialogue once, longest first
    assert all(len(run) == 1 or len(run) * -(-lengths[run[0]] // multiple) * multiple <= cap for run in runs)
    best = math.inf
    for k in range(8):  # every split of the order into consecutive runs within the cap
        for cuts in combinations(range(1, 8), k):
            bounds = [0, *cuts, 8]
            split = [order[a:b] for a, b in zip(bounds, bounds[1:])]
            if all(len(r) == 1 or len(r) * -(-lengths[r[0]] // multiple) * multiple <= cap for r in split):
                best = min(best, _padded_cost(lengths, split, overhead, multiple))
    assert _padded_cost(lengths, runs, overhead, multiple) == best


def test_length_groups_puts_a_long_dialogue_alone_and_short_ones_together():
    from bua.training.collate import length_groups

    lengths = [93, 449, 92, 92, 91, 91, 91, 90]
    assert length_groups(lengths, 4 * 449, 100) == [[1], [0, 2, 3, 4, 5, 6, 7]]
    assert length_groups([100] * 8, 4 * 100, 10**6) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the cap holds
    assert length_groups([700, 90], 200, 100) == [[0], [1]]  # longer than the cap: alone
    assert length_groups([], 100, 100) == []


def test_pad_to_multiple_auto_is_64_on_cuda_only():
    from bua.training.model import resolve_pad_multiple

    assert resolve_pad_multiple(0, torch.device("cuda")) == 64
    assert resolve_pad_multiple(0, torch.device("cpu")) == 1
    assert resolve_pad_multiple(8, torch.device("cpu")) == 8 == resolve_pad_multiple(8, torch.device("cuda"))


def _mixed_dialogues():
    """40 stand-in examples cycling through direct (1 and 4 predictions), explained and generation
    dialogues, and a test of whether example i is prediction-only."""
    from types import SimpleNamespace

    kinds = [("predict",), ("predict",) * 4, ("key_behaviors", "patterns", "summary", "predict"), ("generate",)]
    examples = [SimpleNamespace(round_tasks=kinds[i % 4]) for i in range(40)]
    return examples, lambda i: all(t == "predict" for t in examples[i].round_tasks)


def test_direct_first_moves_prediction_dialogues_to_the_front_of_the_same_set():
    from bua.training.config import StageConfig
    from bua.training.trainer import epoch_order

    examples, is_direct = _mixed_dialogues()

    def order(share):
        return epoch_order(examples, StageConfig(global_batch_size=4, direct_first=share), [1, 2, 0], steps=6)

    shuffled = order(0.0)
    assert list(shuffled) == list(np.random.default_rng([1, 2, 0]).permutation(40))
    n_direct = sum(is_direct(i) for i in shuffled[:24])
    for share, n_front in ((0.25, 6), (1.0, n_direct)):
        ordered = order(share)
        assert sorted(ordered) == list(range(40))
        # the 24 dialogues the 6 steps reach are the shuffled order's; what follows is unchanged
        assert set(ordered[:24]) == set(shuffled[:24]) and list(ordered[24:]) == list(shuffled[24:])
        assert all(is_direct(i) for i in ordered[:n_front])
        # the rest keeps the shuffled order
        rest = [i for i in shuffled[:24] if i not in set(ordered[:n_front])]
        assert list(ordered[n_front:24]) == rest
    assert not any(is_direct(i) for i in order(1.0)[n_direct:24])
    with pytest.raises(ConfigError, match="direct_first"):
        config_from_dict({"stage2": {"direct_first": 1.5}})


def test_direct_last_moves_the_remaining_prediction_dialogues_to_the_end_of_the_same_set():
    from bua.training.config import StageConfig
    from bua.training.trainer import epoch_order

    examples, is_direct = _mixed_dialogues()
    shuffled = list(epoch_order(examples, StageConfig(global_batch_size=4), [1, 2, 0], steps=6))
    direct = [i for i in shuffled[:24] if is_direct(i)]
    ordered = list(epoch_order(examples, StageConfig(global_batch_size=4, direct_first=0.25, direct_last=0.125),
                               [1, 2, 0], steps=6))
    assert sorted(ordered) == list(range(40)) and ordered[24:] == shuffled[24:]
    # 6 direct dialogues first, the next 3 direct ones (in the shuffled order) last, the rest between
    assert ordered[:6] == direct[:6] and ordered[21:24] == direct[6:9]
    assert ordered[6:21] == [i for i in shuffled[:24] if i not in set(direct[:9])]
    # the end block takes only what the front block leaves
    everything = list(epoch_order(examples, StageConfig(global_batch_size=4, direct_first=0.5, direct_last=0.5),
                                  [1, 2, 0], steps=6))
    assert everything[:len(direct)] == direct and not any(is_direct(i) for i in everything[len(direct):24])
    with pytest.raises(ConfigError, match="direct_last"):
        config_from_dict({"stage2": {"direct_first": 0.75, "direct_last": 0.5}})


def test_direct_last_days_puts_generation_dialogues_in_the_end_block_beside_the_predictions():
    from bua.training.config import StageConfig
    from bua.training.trainer import epoch_order

    examples, is_direct = _mixed_dialogues()
    shuffled = list(epoch_order(examples, StageConfig(global_batch_size=4), [1, 2, 0], steps=6))
    direct = [i for i in shuffled[:24] if is_direct(i)]
    is_day = lambda i: examples[i].round_tasks == ("generate",)  # noqa: E731
    cfg = StageConfig(global_batch_size=4, direct_first=0.25, direct_last=0.5, direct_last_days=True)
    ordered = list(epoch_order(examples, cfg, [1, 2, 0], steps=6))
    assert sorted(ordered) == list(range(40)) and ordered[24:] == shuffled[24:]
    assert ordered[:6] == direct[:6]
    # the last 12: direct predictions after the front block's and days, in the shuffled order
    end = [i for i in shuffled[:24] if (is_direct(i) and i not in direct[:6]) or is_day(i)][:12]
    assert ordered[12:24] == end and any(is_day(i) for i in end) and any(is_direct(i) for i in end)
    # the explained dialogues all train between the two blocks
    assert not any(examples[i].round_tasks[0] == "key_behaviors" for i in ordered[:6] + ordered[12:24])
    with pytest.raises(ConfigError, match="direct_last_days"):
        config_from_dict({"stage2": {"direct_last_days": True}})


@pytest.mark.parametrize("field, good, bad, other_stage", [("generation_weight", 4, 0.0, "stage3"),
                                                            ("end_of_turn_weight", 8, -1.0, "stage1")])
def test_loss_multipliers_are_positive_and_stage2_only(field, good, bad, other_stage):
    assert getattr(config_from_dict({}).stage2, field) == 1.0
    assert getattr(config_from_dict({"stage2": {field: good}}).stage2, field) == float(good)
    with pytest.raises(ConfigError, match=f"stage2.{field}"):
        config_from_dict({"stage2": {field: bad}})
    with pytest.raises(ConfigError, match=f"{other_stage}.{field}"):
        config_from_dict({other_stage: {field: 2.0}})


def test_generation_opening_round_is_a_stage2_switch():
    assert config_from_dict({"stage2": {"generation_opening_round": True}}).stage2.generation_opening_round
    with pytest.raises(ConfigError, match="stage1.generation_opening_round"):
        config_from_dict({"stage1": {"generation_opening_round": True}})
    assert config_from_dict({"stage2": {"generation_closing_round": True}}).stage2.generation_closing_round
    with pytest.raises(ConfigError, match="stage3.generation_closing_round"):
        config_from_dict({"stage3": {"generation_closing_round": True}})
