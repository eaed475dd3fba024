"""Behavior encoder: shapes, causality, padding, penultimate states, io, pretraining."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bua.models.encoder import BehaviorEncoder, EncoderConfig, last_valid
from bua.models.pretrain import make_windows, pretrain_encoder

torch.set_num_threads(1)


def _events(batch: int, length: int, n_beh: int = 6, n_loc: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, 7, (batch, length), generator=g),
                        torch.randint(0, 1440, (batch, length), generator=g),
                        torch.randint(0, n_loc, (batch, length), generator=g),
                        torch.randint(0, n_beh, (batch, length), generator=g)], dim=-1)


@pytest.fixture()
def encoder() -> BehaviorEncoder:
    torch.manual_seed(0)
    return BehaviorEncoder(EncoderConfig.tiny(6, 5, n_layers=3)).eval()


def test_config_sizes_and_errors():
    assert EncoderConfig.default(37, 10).d_model == 128
    assert EncoderConfig.large(37, 10).d_model > EncoderConfig.default(37, 10).d_model
    assert EncoderConfig.tiny(37, 10, d_model=16).d_model == 16
    with pytest.raises(ValueError, match="unknown encoder size"):
        EncoderConfig.sized("huge", 3, 3)
    with pytest.raises(ValueError, match="d_model=30 is not divisible by n_heads=4"):
        EncoderConfig(3, 3, d_model=30)
    with pytest.raises(ValueError, match="must divide 1440"):
        EncoderConfig(3, 3, time_bucket_minutes=7)
    cfg = EncoderConfig.tiny(37, 10)
    with pytest.raises(ValueError, match="n_behaviors=37 but the data has 14 behaviors"):
        cfg.check_vocab(14, 10)
    cfg.check_vocab(37, 10)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown EncoderConfig fields: \['bogus'\]"):
        EncoderConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_forward_shapes_and_heads(encoder):
    ev = _events(3, 9)
    mask = torch.ones(3, 9, dtype=torch.bool)
    out = encoder(ev, mask)
    assert out["behavior"].shape == (3, 9, 6)
    assert out["time"].shape == (3, 9, 48)
    assert out["location"].shape == (3, 9, 5)
    states, pooled = encoder.encode(ev, mask)
    assert states.shape == (3, 9, 32) and pooled.shape == (3, 32)
    assert encoder.item_embeddings(ev, mask).shape == (3, 9, 32)


def test_causal(encoder):
    ev = _events(1, 8)
    mask = torch.ones(1, 8, dtype=torch.bool)
    ev2 = ev.clone()
    ev2[0, 5:, 3] = (ev2[0, 5:, 3] + 1) % 6
    s1, _ = encoder.encode(ev, mask)
    s2, _ = encoder.encode(ev2, mask)
    assert torch.allclose(s1[:, :5], s2[:, :5], atol=1e-6)
    assert not torch.allclose(s1[:, 5:], s2[:, 5:])


def test_padding_either_side_matches_unpadded(encoder):
    ev = _events(1, 6)
    full = torch.ones(1, 6, dtype=torch.bool)
    ref_states, ref_pooled = encoder.encode(ev, full)
    ref_logits = encoder(ev, full)["behavior"]
    junk = _events(1, 3, seed=5)
    right = torch.cat([ev, junk], 1)
    right_mask = torch.cat([full, torch.zeros(1, 3, dtype=torch.bool)], 1)
    left = torch.cat([junk, ev], 1)
    left_mask = torch.cat([torch.zeros(1, 3, dtype=torch.bool), full], 1)
    for events, mask in ((right, right_mask), (left, left_mask)):
        states, pooled = encoder.encode(events, mask)
        assert torch.allclose(states[mask], ref_states[0], atol=1e-5)
        assert torch.allclose(pooled, ref_pooled, atol=1e-5)
        assert torch.allclose(encoder(events, mask)["behavior"][mask], ref_logits[0], atol=1e-5)
        assert torch.isfinite(states).all()


def test_encode_is_penultimate_layer(encoder):
    ev = _events(2, 7)
    mask = torch.ones(2, 7, dtype=torch.bool)
    states, pooled = encoder.encode(ev, mask)
    assert torch.allclose(states, encoder._hidden(ev, mask, encoder.config.n_layers - 1))
    assert not torch.allclose(states, encoder._hidden(ev, mask, encoder.config.n_layers))
    assert torch.equal(pooled, states[:, -1])


def test_time_bucket_from_raw_minutes(encoder):
    ev = _events(1, 4)
    mask = torch.ones(1, 4, dtype=torch.bool)
    ev[0, :, 1] = torch.tensor([60, 90, 600, 601])
    same = ev.clone()
    same[0, :, 1] = torch.tensor([89, 119, 629, 610])  # same 30-minute buckets
    other = ev.clone()
    other[0, 2, 1] = 630  # next bucket
    s = encoder.encode(ev, mask)[0]
    assert torch.equal(s, encoder.encode(same, mask)[0])
    assert not torch.allclose(s, encoder.encode(other, mask)[0])


def test_item_embeddings_are_per_event(encoder):
    ev = _events(1, 5)
    mask = torch.tensor([[True, True, True, True, False]])
    emb = encoder.item_embeddings(ev, mask)
    assert torch.equal(emb[0, 4], torch.zeros(32))
    perm = torch.tensor([2, 0, 1, 3, 4])
    assert torch.allclose(encoder.item_embeddings(ev[:, perm], mask), emb[:, perm])


def test_last_valid_handles_empty_rows():
    x = torch.arange(12, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert last_valid(x, mask).tolist() == [[2.0, 3.0], [0.0, 0.0]]


def test_input_errors_name_both_numbers(encoder):
    ev = _events(1, 4)
    mask = torch.ones(1, 4, dtype=torch.bool)
    bad = ev.clone()
    bad[0, 2, 3] = 9
    with pytest.raises(ValueError, match="behavior id 9 but the encoder has n_behaviors=6"):
        encoder(bad, mask)
    bad = ev.clone()
    bad[0, 1, 2] = 5
    with pytest.raises(ValueError, match="location id 5 but the encoder has n_locations=5"):
        encoder.encode(bad, mask)
    mask2 = mask.clone()
    mask2[0, 1] = False  # the bad event is padding: ignored
    encoder.encode(bad, mask2)
    bad = ev.clone()
    bad[0, 3, 0] = -1
    with pytest.raises(ValueError, match="day id -1 but the encoder has 7 days"):
        encoder(bad, mask)
    with pytest.raises(ValueError, match="exceeds the encoder's max_len=64"):
        encoder(_events(1, 65), torch.ones(1, 65, dtype=torch.bool))
    with pytest.raises(TypeError, match="int64"):
        encoder(ev.int(), mask)
    with pytest.raises(ValueError, match="mask must be bool"):
        encoder(ev, mask.long())


def test_save_load_roundtrip(encoder, tmp_path):
    encoder.save(tmp_path / "enc")
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["encoder.json", "encoder.safetensors"]
    loaded = BehaviorEncoder.load(tmp_path / "enc")
    assert loaded.config == encoder.config
    ev = _events(2, 5)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert torch.equal(loaded.encode(ev, mask)[0], encoder.encode(ev, mask)[0])
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        BehaviorEncoder.load(tmp_path)


def _cyclic_users(n_users: int, n_events: int, seed: int) -> list[np.ndarray]:
    """Behavior k is always followed by k+1 (mod 4), at location k, 30 minutes apart."""
    rng = np.random.default_rng(seed)
    users = []
    for _ in range(n_users):
        start = int(rng.integers(0, 4))
        beh = (start + np.arange(n_events)) % 4
        minute = (np.arange(n_events) * 30) % 1440
        day = (np.arange(n_events) * 30 // 1440) % 7
        users.append(np.stack([day, minute, beh, beh], axis=1).astype(np.int64))
    return users


def test_make_windows():
    u = np.zeros((10, 4), dtype=np.int64)
    w = make_windows([u, u[:1], u[:3]], max_len=4, stride=2)
    assert [len(x) for x in w] == [4, 4, 4, 4, 3]  # starts 0, 2, 4, 6 ; 1-event user dropped


def test_pretrain_learns_and_is_deterministic():
    train, val = _cyclic_users(12, 40, 0), _cyclic_users(3, 40, 1)
    cfg = EncoderConfig.tiny(4, 4, max_len=16)
    enc, report = pretrain_encoder(train, val, cfg, max_epochs=8, batch_size=16, lr=3e-3,
                                   progress=False)
    assert report.history[-1]["val_loss"] < report.history[0]["val_loss"]
    assert report.history[report.best_epoch - 1]["val_behavior_acc"] > 0.9  # chance is 0.25
    assert not enc.training
    enc2, report2 = pretrain_encoder(train, val, cfg, max_epochs=2, batch_size=16, lr=3e-3,
                                     progress=False)
    enc3, report3 = pretrain_encoder(train, val, cfg, max_epochs=2, batch_size=16, lr=3e-3,
                                     progress=False)
    assert report2.history == report3.history
    assert "best epoch" in report.summary()


def test_pretrain_rejects_mismatched_vocab():
    train = _cyclic_users(2, 10, 0)
    with pytest.raises(ValueError, match="behavior ids up to 3.*n_behaviors=3"):
        pretrain_encoder(train, train, EncoderConfig.tiny(3, 4), max_epochs=1, progress=False)
