"""Encoder distillation at the prediction round (stage2.distill_weight)."""
from __future__ import annotations

import math

import pytest
import torch

from bua.training.config import ConfigError, config_from_dict
from bua.training.distill import (
    FirstTokens,
    distillation_loss,
    first_token_log_prior,
    teacher_agreement,
    teacher_distribution,
)

VOCAB = {"online": [7], "shopping": [9], "class": [11], "gaming": [3, 4], "bus": [5]}


def _tokenize(text: str) -> list[int]:
    return [t for word in text.split() for t in VOCAB[word]]


def test_candidates_sharing_a_first_token_share_a_group():
    first = FirstTokens.build(_tokenize, ["online shopping", "gaming", "online class", "bus"])
    assert first.ids.tolist() == [7, 3, 5]
    assert first.groups.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="'' tokenizes to nothing"):
        FirstTokens.build(lambda text: [], [""])


def test_loss_is_the_kl_to_the_pooled_teacher():
    first = FirstTokens.build(_tokenize, ["online shopping", "gaming", "online class", "bus"])
    teacher = torch.tensor([[0.2, 0.5, 0.1, 0.2], [0.25, 0.25, 0.25, 0.25]])
    pooled = torch.tensor([[0.3, 0.5, 0.2], [0.5, 0.25, 0.25]])
    exact = distillation_loss(pooled.log(), teacher, first)
    torch.testing.assert_close(exact, torch.zeros(2), atol=1e-6, rtol=0)
    uniform = distillation_loss(torch.zeros(2, 3), teacher, first)
    expected = [sum(p * math.log(p * 3) for p in row) for row in pooled.tolist()]
    torch.testing.assert_close(uniform, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    # the gradient moves the student's logits toward the pooled teacher
    logits = torch.zeros(2, 3, requires_grad=True)
    distillation_loss(logits, teacher, first).sum().backward()
    torch.testing.assert_close(logits.grad, torch.full((2, 3), 1 / 3) - pooled)


def test_agreement_compares_top1_after_pooling_the_teacher_by_first_token():
    first = FirstTokens.build(_tokenize, ["online shopping", "gaming", "online class", "bus"])
    # "gaming" is the teacher's top candidate (0.4), but the two "online" names pool to 0.5
    teacher = torch.tensor([[0.25, 0.4, 0.25, 0.1], [0.1, 0.1, 0.1, 0.7]])
    student = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])  # first token groups: online, gaming, bus
    assert teacher_agreement(student, teacher, first).tolist() == [True, False]
    assert teacher_agreement(torch.tensor([[0.0, 0.0, 3.0]]), teacher[1:], first).tolist() == [True]


class _Encoder(torch.nn.Module):
    """Behavior logits that reveal the position they were read at."""

    def forward(self, events, mask):
        b, length = mask.shape
        logits = torch.zeros(b, length, 3)
        logits[:, :, 0] = torch.arange(length, dtype=torch.float32)
        return {"behavior": logits}


def test_teacher_reads_the_encoder_after_each_predictions_events():
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    seen = torch.tensor([[3, 1], [1, 0]])  # row 0: a prediction after 3 events and one after 1
    events = torch.zeros(2, 4, 4, dtype=torch.long)
    p = teacher_distribution(_Encoder(), events, mask, seen, temperature=1.0)
    assert p.shape == (2, 2, 3)
    e2, e0 = math.exp(2), 1.0
    torch.testing.assert_close(p[:, 0, 0], torch.tensor([e2 / (e2 + 2), e0 / (e0 + 2)]))
    torch.testing.assert_close(p[0, 1, 0], torch.tensor(e0 / (e0 + 2)))
    sharp = teacher_distribution(_Encoder(), events, mask, seen, temperature=0.5)
    assert sharp[0, 0, 0] > p[0, 0, 0]


def test_distill_weight_is_a_stage2_switch():
    cfg = config_from_dict({"stage2": {"distill_weight": 2.0, "distill_temperature": 2.0}})
    assert (cfg.stage2.distill_weight, cfg.stage2.distill_temperature) == (2.0, 2.0)
    assert config_from_dict({}).stage2.distill_weight == 0.0
    with pytest.raises(ConfigError, match="stage3.distill_weight"):
        config_from_dict({"stage3": {"distill_weight": 1.0}})
    with pytest.raises(ConfigError, match="stage2.distill_weight"):
        config_from_dict({"stage2": {"distill_weight": -1.0}})
    with pytest.raises(ConfigError, match="stage2.distill_temperature"):
        config_from_dict({"stage2": {"distill_temperature": 0.0}})


def test_prior_adjustment_shifts_the_student_by_tau_log_prior():
    first = FirstTokens.build(_tokenize, ["online shopping", "gaming", "online class", "bus"])
    # counts + 1 = [4, 2, 2, 1] of 9, pooled by first token: online 6/9, gaming 2/9, bus 1/9
    log_prior = first_token_log_prior(first, [3, 1, 1, 0], tau=0.5)
    torch.testing.assert_close(log_prior, 0.5 * torch.tensor([6 / 9, 2 / 9, 1 / 9]).log())
    teacher = torch.tensor([[0.2, 0.5, 0.1, 0.2]])
    pooled = torch.tensor([[0.3, 0.5, 0.2]])
    logits = torch.randn(1, 3)
    torch.testing.assert_close(distillation_loss(logits, teacher, first, log_prior),
                               distillation_loss(logits + log_prior, teacher, first))
    # the loss is zero where the raw logits are the teacher's minus tau log prior: the rare
    # behavior (bus) ranks above the common one it ties with in the teacher
    fitted = pooled.log() - log_prior
    torch.testing.assert_close(distillation_loss(fitted, teacher, first, log_prior), torch.zeros(1), atol=1e-6, rtol=0)
    assert fitted[0, 2] > pooled.log()[0, 2] and fitted[0, 2] - fitted[0, 0] > pooled.log()[0, 2] - pooled.log()[0, 0]
    with pytest.raises(ValueError, match="3 behavior counts for 4 candidates"):
        first_token_log_prior(first, [1, 2, 3], tau=1.0)


def test_prior_adjustment_needs_distillation():
    cfg = config_from_dict({"stage2": {"distill_weight": 1.0, "distill_prior_adjustment": 0.5}})
    assert cfg.stage2.distill_prior_adjustment == 0.5
    with pytest.raises(ConfigError, match="stage2.distill_prior_adjustment"):
        config_from_dict({"stage2": {"distill_prior_adjustment": 0.5}})
    with pytest.raises(ConfigError, match="stage2.distill_prior_adjustment"):
        config_from_dict({"stage2": {"distill_weight": 1.0, "distill_prior_adjustment": -1.0}})
