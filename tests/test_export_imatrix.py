"""The importance matrix: which GGUF tensor each hooked layer feeds, its statistics, and that
llama.cpp's quantizer uses it."""
from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from test_export_fixtures import sharpened_backbone

from bua.export.errors import ExportError
from bua.export.gguf_convert import convert_hf_to_gguf
from bua.export.imatrix import collect, gguf_tensor_name
from bua.export.quantize import quantize_gguf


def test_hf_modules_map_to_gguf_tensors():
    assert gguf_tensor_name("model.layers.3.self_attn.q_proj", False) == "blk.3.attn_q.weight"
    assert gguf_tensor_name("base_model.model.model.layers.12.mlp.down_proj.base_layer", False) == \
        "blk.12.ffn_down.weight"
    assert gguf_tensor_name("model.layers.0.self_attn.o_proj", False) == "blk.0.attn_output.weight"
    assert gguf_tensor_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default", False) is None
    assert gguf_tensor_name("lm_head", False) == "output.weight"
    assert gguf_tensor_name("base_model.model.lm_head", True) == "token_embd.weight"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    out = tmp_path_factory.mktemp("imatrix")
    hf_dir = sharpened_backbone("llama", out / "hf")
    return hf_dir, convert_hf_to_gguf(hf_dir, out / "model-f16.gguf", progress=False).path


def test_collect_gives_mean_squares_per_input_column(llama):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(llama[0]), dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 2, 7, 3]])
    captured = {}

    def run():
        with torch.no_grad():
            captured["out"] = lm(input_ids=ids, output_hidden_states=True)

    tied = bool(lm.config.tie_word_embeddings)
    stats = collect(lm, run, tied)
    n_layers = lm.config.num_hidden_layers
    assert len(stats) == 7 * n_layers + 1
    head = "token_embd.weight" if tied else "output.weight"
    final = captured["out"].hidden_states[-1][0]  # the LM head's input, after the final norm
    values, rows = stats[head]
    assert rows == ids.shape[1]
    np.testing.assert_allclose(values, (final ** 2).mean(dim=0).numpy(), rtol=1e-5, atol=1e-7)
    assert stats["blk.0.ffn_down.weight"][0].shape == (lm.config.intermediate_size,)
    assert stats["blk.0.attn_q.weight"][0].shape == (lm.config.hidden_size,)


def _weights(path, name):
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == name)
    return gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1, int(t.shape[0]))


def test_quantizer_weighs_columns_by_the_importance_matrix(llama, tmp_path):
    f16 = llama[1]
    name = "blk.0.ffn_up.weight"
    width = _weights(f16, name).shape[1]
    importance = np.full(width, 1e-3, dtype=np.float32)
    important = np.arange(0, width, 4)
    importance[important] = 1e3
    plain = quantize_gguf(f16, tmp_path / "plain.gguf", "q4_0", n_threads=1)
    weighted = quantize_gguf(f16, tmp_path / "weighted.gguf", "q4_0", n_threads=1, imatrix={name: importance})
    ref = _weights(f16, name)

    def error(path):
        diff = _weights(path, name) - ref
        return float((diff[:, important] ** 2).sum())

    # the columns the matrix calls important are reproduced more closely than without it
    assert error(weighted.path) < 0.8 * error(plain.path)
    other = "blk.0.attn_q.weight"  # not in the matrix: quantized as before
    np.testing.assert_array_equal(_weights(weighted.path, other), _weights(plain.path, other))


def test_bad_importance_values_are_refused(llama, tmp_path):
    with pytest.raises(ExportError, match="'blk.0.ffn_up.weight'.*finite 1-D"):
        quantize_gguf(llama[1], tmp_path / "x.gguf", "q4_0", imatrix={"blk.0.ffn_up.weight": np.array([np.nan])})
    assert not (tmp_path / "x.gguf").exists()
