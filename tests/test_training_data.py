"""Curriculum data switches: stage2.prediction_answers (answers distilled from the encoder),
stage2.answer_balance (rare answers drawn more often) and data.user_profile (where training
users' user-level answers come from)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bua.dialogue import PREDICT
from bua.events import events_to_array
from bua.models.encoder import BehaviorEncoder, EncoderConfig
from bua.models.pretrain import pad_windows
from bua.samples import prediction_samples
from bua.simulate import simulate
from bua.training.config import ConfigError, DataConfig, StageConfig, config_from_dict
from bua.training.data import (
    answer_weights,
    encoder_answers,
    observed_answers,
    prepare,
    stage_dialogues,
    teacher_answers,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset():
    return simulate(n_users=6, n_days=7, seed=11)


def _encoder(vocab) -> BehaviorEncoder:
    torch.manual_seed(0)
    return BehaviorEncoder(EncoderConfig.tiny(vocab.n_behaviors, vocab.n_locations))


def test_prediction_answers_is_a_stage2_switch():
    assert config_from_dict({"stage2": {"prediction_answers": "encoder"}}).stage2.prediction_answers == "encoder"
    with pytest.raises(ConfigError, match="stage1.prediction_answers"):
        config_from_dict({"stage1": {"prediction_answers": "encoder"}})
    with pytest.raises(ConfigError, match="prediction_answers"):
        config_from_dict({"stage2": {"prediction_answers": "teacher"}})


@pytest.mark.parametrize("source", ["log", "window"])
def test_user_profile_reaches_the_labeler(source):
    config = DataConfig(n_users=10, n_days=7, user_profile=source)
    assert prepare(config).labeler.config.user_profile == source
    with pytest.raises(ConfigError, match="user_profile"):
        config_from_dict({"data": {"user_profile": "everything"}})


def test_encoder_answers_are_the_encoders_argmax(dataset):
    encoder = _encoder(dataset.vocab).train()  # dropout on: relabelling must switch it off
    samples = prediction_samples(dataset.users[0], 8, min_history=4, max_per_user=6)
    relabel = encoder_answers(encoder)
    out = [relabel(s) for s in samples]

    events, mask = pad_windows([events_to_array(s.history) for s in samples], "cpu")
    encoder.eval()
    with torch.no_grad():
        logits = encoder(events, mask)["behavior"]
    expected = logits[torch.arange(len(samples)), mask.long().sum(1) - 1].argmax(-1).tolist()
    assert [s.target.behavior for s in out] == expected
    assert [s.history for s in out] == [s.history for s in samples]
    assert [s.target.minute for s in out] == [s.target.minute for s in samples]
    assert encoder.training is False  # restored to the mode it had (eval, set above)
    encoder.train()
    relabel(samples[0])
    assert encoder.training


def test_stage_dialogues_answer_with_the_relabelled_behavior(dataset):
    vocab = dataset.vocab
    cfg = StageConfig(direct_fraction=1.0, generation_fraction=0.0)
    dconfig = DataConfig(history_len=8)
    data = SimpleNamespace(labeler=SimpleNamespace(vocab=vocab))
    users = list(dataset.users)[:3]

    def args(relabel):
        from bua.chat import ChatFormat
        from bua.dialogue import default_template

        return dict(data=data, users=users, stage="stage2", per_user=3, cfg=cfg, dconfig=dconfig,
                    template=default_template(), chat=ChatFormat.chatml(), relabel=relabel)

    observed = stage_dialogues(**args(None))
    always_first = stage_dialogues(**args(lambda s: s.__class__(s.user_id, s.history, s.target.__class__(
        s.target.day, s.target.minute, s.target.location, 0, s.target.week))))
    assert len(observed) == len(always_first) > 0
    assert all(d.tasks == [PREDICT] for d in always_first)
    assert {d.answers[-1] for d in always_first} == {vocab.behaviors[0]}
    assert {d.target_behavior for d in always_first} == {0}
    assert len({d.answers[-1] for d in observed}) > 1
    assert [d.history for d in observed] == [d.history for d in always_first]
    assert np.all([d.target_behavior is not None for d in observed])


def test_answer_balance_is_a_stage2_switch():
    assert config_from_dict({"stage2": {"answer_balance": 0.5}}).stage2.answer_balance == 0.5
    with pytest.raises(ConfigError, match="stage1.answer_balance"):
        config_from_dict({"stage1": {"answer_balance": 0.5}})
    with pytest.raises(ConfigError, match="stage2.answer_balance"):
        config_from_dict({"stage2": {"answer_balance": 1.5}})


def test_answer_weights_are_the_answers_counts_to_the_minus_q():
    answers = np.array([2, 2, 2, 2, 0, 2])
    assert answer_weights(answers, 0.0).tolist() == [1.0] * 6
    np.testing.assert_allclose(answer_weights(answers, 0.5), [5 ** -0.5] * 4 + [1.0, 5 ** -0.5])
    np.testing.assert_allclose(answer_weights(answers, 1.0), [0.2, 0.2, 0.2, 0.2, 1.0, 0.2])


def test_teacher_answers_in_batches_are_the_one_by_one_answers(dataset):
    encoder = _encoder(dataset.vocab)
    samples = prediction_samples(list(dataset.users)[:2], 8, min_history=2)
    relabel = encoder_answers(encoder)
    assert teacher_answers(encoder, samples, batch_size=7).tolist() == [relabel(s).target.behavior for s in samples]


def test_answer_balance_trains_rare_answers_more_often(dataset):
    from bua.chat import ChatFormat
    from bua.dialogue import default_template

    vocab = dataset.vocab
    dconfig = DataConfig(history_len=8)
    data = SimpleNamespace(labeler=SimpleNamespace(vocab=vocab))
    users = list(dataset.users)
    windows = prediction_samples(users, 8, min_history=4)
    counts = np.bincount(observed_answers(windows), minlength=vocab.n_behaviors)

    def direct_answers(q, answers_of=observed_answers):
        cfg = StageConfig(direct_fraction=1.0, generation_fraction=0.0, answer_balance=q)
        dialogues = stage_dialogues(data, users, "stage2", 12, cfg, dconfig, default_template(), ChatFormat.chatml(),
                                    answers_of=answers_of)
        assert len(dialogues) == 12 * len(users)
        return np.array([d.target_behavior for d in dialogues]), dialogues

    even, even_dialogues = direct_answers(0.0)
    _, no_pool = direct_answers(0.0, None)
    assert [d.history for d in even_dialogues] == [d.history for d in no_pool]  # q = 0: the paper's windows
    balanced, balanced_dialogues = direct_answers(1.0)
    rare = counts < np.median(counts[counts > 0])
    assert rare[balanced].mean() > rare[even].mean() + 0.1
    assert len({d.target_behavior for d in balanced_dialogues}) > len({d.target_behavior for d in even_dialogues})
