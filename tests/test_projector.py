"""Projector modes, SoftTokenizer, io, and the ONNX export smoke test (onnxruntime parity)."""
from __future__ import annotations

import pytest
import torch

from bua.models.encoder import BehaviorEncoder, EncoderConfig
from bua.models.onnx_io import example_inputs, export_soft_token_onnx, onnx_parity
from bua.models.projector import Projector, ProjectorConfig, SoftTokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def encoder() -> BehaviorEncoder:
    torch.manual_seed(0)
    return BehaviorEncoder(EncoderConfig.tiny(7, 9)).eval()


def _tokenizer(encoder: BehaviorEncoder, mode: str, out_dim: int = 24, states: str = "penultimate") -> SoftTokenizer:
    torch.manual_seed(1)
    config = ProjectorConfig(32, out_dim, mode=mode, n_pooled_tokens=3, states=states)
    return SoftTokenizer(encoder, Projector(config)).eval()


def test_config_validation():
    assert ProjectorConfig(8, 16).hidden == 16
    assert ProjectorConfig(8, 16, hidden_dim=4).hidden == 4
    with pytest.raises(ValueError, match="unknown projector mode 'mean'"):
        ProjectorConfig(8, 16, mode="mean")
    with pytest.raises(ValueError, match="out_dim must be >= 1"):
        ProjectorConfig(8, 0)
    with pytest.raises(ValueError, match="unknown projector states 'last'"):
        ProjectorConfig(8, 16, states="last")
    with pytest.raises(ValueError, match="item_emb reads item embeddings"):
        ProjectorConfig(8, 16, mode="item_emb", states="final")


def test_is_eq1_mlp():
    p = Projector(ProjectorConfig(8, 16, hidden_dim=12))
    layers = [type(m).__name__ for m in p.mlp]
    assert layers == ["Linear", "GELU", "Linear"]
    assert p.mlp[0].in_features == 8 and p.mlp[2].out_features == 16
    x = torch.randn(2, 3, 8)
    tokens, _ = p(x, torch.ones(2, 3, dtype=torch.bool))
    assert torch.allclose(tokens, p.mlp[2](torch.nn.functional.gelu(p.mlp[0](x))))


@pytest.mark.parametrize("mode", ["per_event", "pooled"])
def test_scale_output_scales_every_soft_token(mode):
    torch.manual_seed(2)
    p = Projector(ProjectorConfig(8, 16, mode=mode, n_pooled_tokens=2))
    x, mask = torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)
    before, _ = p(x, mask)
    p.scale_output(2.5)
    after, _ = p(x, mask)
    assert torch.allclose(after, 2.5 * before, atol=1e-5)
    assert all(t.grad is None for t in p.parameters())


def test_per_event_mode(encoder):
    tok = _tokenizer(encoder, "per_event")
    events, mask = example_inputs(encoder, batch=2, length=6)
    soft, soft_mask = tok(events, mask)
    assert soft.shape == (2, 6, 24) and torch.equal(soft_mask, mask)
    states, _ = encoder.encode(events, mask)
    assert torch.allclose(soft, tok.projector.mlp(states))


def test_final_states_feed_the_projector_when_asked(encoder):
    """`states="final"`: the last layer after its LayerNorm (what the next-event heads read),
    not the penultimate layer; it travels with the projector's saved config."""
    events, mask = example_inputs(encoder, batch=2, length=6)
    final = _tokenizer(encoder, "per_event", states="final")
    soft, _ = final(events, mask)
    assert torch.allclose(soft, final.projector.mlp(encoder.final_states(events, mask)))
    assert not torch.allclose(soft, final.projector.mlp(encoder.encode(events, mask)[0]))
    pooled = _tokenizer(encoder, "pooled", states="final")
    assert torch.allclose(pooled(events, mask)[0], pooled.projector(encoder.final_states(events, mask), mask)[0])


def test_item_emb_mode_uses_item_embeddings(encoder):
    tok = _tokenizer(encoder, "item_emb")
    events, mask = example_inputs(encoder, batch=2, length=6)
    soft, soft_mask = tok(events, mask)
    assert torch.allclose(soft, tok.projector.mlp(encoder.item_embeddings(events, mask)))
    # no sequence context: an event's token does not depend on the events before it
    shuffled = events[:, [1, 0, 2, 3, 4, 5]]
    assert torch.allclose(tok(shuffled, mask)[0][0, 0], soft[0, 1], atol=1e-6)


def test_pooled_mode_ignores_padding(encoder):
    tok = _tokenizer(encoder, "pooled")
    events, mask = example_inputs(encoder, batch=2, length=6)
    soft, soft_mask = tok(events, mask)
    assert soft.shape == (2, 3, 24) and soft_mask.shape == (2, 3) and soft_mask.all()
    junk = events.clone()
    junk[1, ~mask[1], 3] = (junk[1, ~mask[1], 3] + 1) % 7
    assert torch.allclose(tok(junk, mask)[0], soft, atol=1e-6)
    empty = torch.zeros_like(mask)
    soft_e, mask_e = tok(events, empty)
    assert torch.isfinite(soft_e).all() and not mask_e.any()


def test_soft_tokenizer_width_mismatch(encoder):
    with pytest.raises(ValueError, match="in_dim=16 does not match the encoder's d_model=32"):
        SoftTokenizer(encoder, Projector(ProjectorConfig(16, 8)))


def test_gradients_reach_projector_only_when_encoder_frozen(encoder):
    tok = _tokenizer(encoder, "per_event").train()
    for p in tok.encoder.parameters():
        p.requires_grad_(False)
    events, mask = example_inputs(encoder, batch=2, length=5)
    soft, soft_mask = tok(events, mask)
    soft[soft_mask].pow(2).mean().backward()
    assert all(p.grad is not None for p in tok.projector.parameters())
    for p in tok.encoder.parameters():
        p.requires_grad_(True)


def test_save_load(encoder, tmp_path):
    proj = _tokenizer(encoder, "pooled", states="final").projector
    proj.save(tmp_path)
    loaded = Projector.load(tmp_path)
    assert loaded.config == proj.config
    x = torch.randn(2, 4, 32)
    m = torch.ones(2, 4, dtype=torch.bool)
    assert torch.equal(loaded(x, m)[0], proj(x, m)[0])


@pytest.mark.parametrize("mode,states", [("per_event", "penultimate"), ("pooled", "penultimate"),
                                         ("item_emb", "penultimate"), ("per_event", "final")])
def test_onnx_export_dynamic_batch_and_length(encoder, tmp_path, mode, states):
    import onnx

    tok = _tokenizer(encoder, mode, states=states)
    path = export_soft_token_onnx(tok.encoder, tok.projector, tmp_path / "encoder.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["events", "mask"]
    assert [o.name for o in model.graph.output] == ["soft_tokens", "soft_mask"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2] == 4 and isinstance(dims[0], str) and isinstance(dims[1], str)
    for batch, length in ((1, 1), (3, 11), (5, 64)):
        events, mask = example_inputs(encoder, batch=batch, length=length, seed=batch)
        assert onnx_parity(tok.encoder, tok.projector, path, events, mask) <= 1e-4
    assert not list(tmp_path.glob(".*.tmp-*"))
