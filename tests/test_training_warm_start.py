"""The projector warm start (encoder.warm_start): soft tokens pointed at the LLM's behavior-name
embeddings before any LLM forward pass."""
from __future__ import annotations

import pytest
import torch

from bua.models.encoder import BehaviorEncoder, EncoderConfig
from bua.models.projector import Projector, ProjectorConfig, SoftTokenizer
from bua.simulate import simulate
from bua.training.config import WarmStartSettings
from bua.training.warm_start import behavior_name_embeddings, warm_start_projector

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset():
    return simulate(n_users=24, n_days=7, seed=5)


def _soft(vocab, mode="per_event", width=48) -> SoftTokenizer:
    torch.manual_seed(0)
    encoder = BehaviorEncoder(EncoderConfig.tiny(vocab.n_behaviors, vocab.n_locations)).eval()
    return SoftTokenizer(encoder, Projector(ProjectorConfig(encoder.config.d_model, width, mode=mode)))


def test_name_embeddings_are_the_mean_of_the_name_tokens(smol_tok):
    emb = torch.randn(smol_tok.vocab_size, 8)
    rows = behavior_name_embeddings(emb, smol_tok, ["watching video", "gym"])
    ids = smol_tok("watching video", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    assert torch.allclose(rows[0], emb[ids].mean(0))


@pytest.mark.parametrize("target, min_acc", [("next", 0.0), ("own", 0.6)])
def test_warm_start_points_soft_tokens_at_the_target_behavior(dataset, smol_tok, target, min_acc):
    users = list(dataset.users)
    soft = _soft(dataset.vocab)
    torch.manual_seed(1)
    embedding = torch.randn(smol_tok.vocab_size, 48) * 0.5
    encoder_before = {k: v.clone() for k, v in soft.encoder.state_dict().items()}
    settings = WarmStartSettings(enabled=True, steps=150, lr=3e-3, target=target)
    report = warm_start_projector(soft, embedding, smol_tok, list(dataset.vocab.behaviors), users[:20], users[20:],
                                  max_len=16, settings=settings, seed=0)
    # The nearest behavior name now names the target behavior far above a random projector
    # (an event's own behavior is in the encoder's input, so "own" is read almost exactly), at
    # the norm of the LLM's token embeddings.
    assert report.target == target
    assert report.val_acc_after > report.val_acc_before + 0.1, report
    assert report.val_acc_after > min_acc, report
    assert report.soft_norm_after == pytest.approx(report.target_norm, rel=0.2), report
    assert all(torch.equal(v, soft.encoder.state_dict()[k]) for k, v in encoder_before.items())


def test_warm_start_needs_per_event_tokens(dataset, smol_tok):
    soft = _soft(dataset.vocab, mode="pooled")
    with pytest.raises(ValueError, match="one soft token per event"):
        warm_start_projector(soft, torch.randn(smol_tok.vocab_size, 48), smol_tok, list(dataset.vocab.behaviors),
                             list(dataset.users), [], 16, WarmStartSettings(enabled=True, steps=1), 0)
