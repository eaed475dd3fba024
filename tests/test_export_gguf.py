"""HF -> GGUF conversion: tokenizer detection, tensor layout, and parity with transformers."""
from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
from test_export_fixtures import sharpened_backbone

from bua.backbones import resolve_backbone
from bua.export import gguf_convert
from bua.export.errors import ExportError
from bua.export.gguf_convert import convert_hf_to_gguf, permute_for_llama_rope
from bua.export.gguf_vocab import LLAMA3_REGEX, QWEN2_REGEX, SUPPORTED_PRE_TOKENIZERS, detect_pre_tokenizer
from bua.export.parity import (
    DEFAULT_TEXTS,
    F16_REL_TOL,
    HFReference,
    load_gguf,
    logits_parity,
    tokenization_parity,
)

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
BYTE_LEVEL_NO_REGEX = {**BYTE_LEVEL, "use_regex": False}
PRE_TOKENIZERS = {
    "gpt-2": BYTE_LEVEL,
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
    "qwen2": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False},
            BYTE_LEVEL_NO_REGEX,
        ],
    },
    "llama-bpe": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
            BYTE_LEVEL_NO_REGEX,
        ],
    },
}
EXTRA_TEXTS = (
    "x 3 y33 z333 4444 55555 1,234,567.89",
    "I've been 'told he's there, 'RE you sure? We'Ve a'lL",
    "   leading spaces\n\n\n   \t\t trailing   \n",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Both (sharpened) tiny backbones converted to f16 GGUF, with their HF references."""
    out = tmp_path_factory.mktemp("gguf")
    made = {}
    for arch in ("qwen2", "llama"):
        hf_dir = sharpened_backbone(arch, out / f"hf-{arch}")
        result = convert_hf_to_gguf(hf_dir, out / f"tiny-{arch}.gguf", dtype="f16", progress=False)
        made[arch] = (result, HFReference(hf_dir))
    return made


def test_detects_supported_pre_tokenizers():
    for name, pre in PRE_TOKENIZERS.items():
        assert detect_pre_tokenizer({"pre_tokenizer": pre}) == name
    assert set(PRE_TOKENIZERS) == set(SUPPORTED_PRE_TOKENIZERS)


@pytest.mark.parametrize(
    "pre",
    [
        None,
        {"type": "Whitespace"},
        {**BYTE_LEVEL, "add_prefix_space": True},
        {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": r"\d+"}}, BYTE_LEVEL_NO_REGEX]},
    ],
)
def test_unsupported_pre_tokenizer_names_the_supported_ones(pre):
    with pytest.raises(ExportError, match="Supported pre-tokenizers: 'gpt-2'.*'smollm'.*'qwen2'.*'llama-bpe'"):
        detect_pre_tokenizer({"pre_tokenizer": pre})


def test_permutation_interleaves_the_two_halves_of_each_head():
    n_head, head_dim = 2, 4
    rows = np.arange(n_head * head_dim, dtype=np.float32)[:, None]
    out = permute_for_llama_rope(rows, n_head)[:, 0]
    # head 0 rows 0..3 = [a0 a1 | b0 b1] -> [a0 b0 a1 b1]
    assert out.tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_tiny_gguf_matches_transformers(tiny, arch):
    result, hf = tiny[arch]
    model = load_gguf(result.path)
    tok = tokenization_parity(hf, model, DEFAULT_TEXTS + EXTRA_TEXTS)
    assert tok.ok, tok.mismatches[:2]
    assert tok.n_tokens > 300
    logits = logits_parity(hf, model, DEFAULT_TEXTS[:3])
    assert logits.n_positions > 60
    assert logits.within(F16_REL_TOL), logits
    assert logits.argmax_agreement >= 0.9, logits  # random weights have near ties


def test_tiny_gguf_layout(tiny):
    qwen2 = gguf.GGUFReader(tiny["qwen2"][0].path)
    names = {t.name: t for t in qwen2.tensors}
    assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias", "output.weight"} <= set(names)
    assert gguf.GGMLQuantizationType(names["blk.0.attn_q.bias"].tensor_type).name == "F32"
    assert gguf.GGMLQuantizationType(names["blk.0.attn_q.weight"].tensor_type).name == "F16"
    fields = qwen2.fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "qwen2"
    assert float(fields["qwen2.rope.freq_base"].parts[-1][0]) == 1_000_000.0
    assert bytes(fields["tokenizer.chat_template"].parts[-1]).decode().startswith("{% for message in messages %}")

    llama = gguf.GGUFReader(tiny["llama"][0].path)
    llama_names = {t.name for t in llama.tensors}
    assert "output.weight" not in llama_names  # tied embeddings
    assert not any(n.endswith(".bias") for n in llama_names)
    assert tiny["llama"][0].tied_embeddings and not tiny["qwen2"][0].tied_embeddings


def test_llama_without_rope_permutation_breaks_parity(tiny, tmp_path, monkeypatch):
    # Guards the parity test itself: the q/k permutation must be what makes llama match.
    _, hf = tiny["llama"]
    monkeypatch.setattr(gguf_convert, "permute_for_llama_rope", lambda w, n_head: w)
    path = convert_hf_to_gguf(hf.hf_dir, tmp_path / "unpermuted.gguf", progress=False).path
    bad = logits_parity(hf, load_gguf(path), DEFAULT_TEXTS[:1])
    assert bad.rel_diff > 0.3, bad


def test_f32_conversion(tiny, tmp_path):
    # llama.cpp keeps its KV cache in f16, so f32 weights do not shrink the logit difference
    # much; the file holds every tensor as F32.
    _, hf = tiny["qwen2"]
    result = convert_hf_to_gguf(hf.hf_dir, tmp_path / "f32.gguf", dtype="f32", progress=False)
    assert result.size_bytes > tiny["qwen2"][0].size_bytes * 1.8
    types = {gguf.GGMLQuantizationType(t.tensor_type).name for t in gguf.GGUFReader(result.path).tensors}
    assert types == {"F32"}
    parity = logits_parity(hf, load_gguf(result.path), DEFAULT_TEXTS[:1])
    assert parity.within(F16_REL_TOL), parity


@pytest.mark.parametrize("pre", ["smollm", "qwen2", "llama-bpe"])
def test_each_pre_tokenizer_tokenizes_like_hf(tiny, tmp_path, pre):
    """SmolLM2's vocabulary under each supported pre-tokenizer: llama.cpp splits as HF does."""
    from transformers import AutoTokenizer

    src = tiny["llama"][1].hf_dir
    variant = tmp_path / pre
    shutil.copytree(src, variant)
    data = json.loads((variant / "tokenizer.json").read_text())
    data["pre_tokenizer"] = PRE_TOKENIZERS[pre]
    data["model"]["ignore_merges"] = pre == "llama-bpe"  # as Llama 3's tokenizer.json has it
    if pre == "qwen2":
        data["normalizer"] = {"type": "NFC"}
    (variant / "tokenizer.json").write_text(json.dumps(data))
    result = convert_hf_to_gguf(variant, tmp_path / f"{pre}.gguf", progress=False)
    assert result.pre_tokenizer == pre

    hf_tok = AutoTokenizer.from_pretrained(str(variant))
    expected = json.dumps(PRE_TOKENIZERS[pre], separators=(",", ":")).encode()
    assert hf_tok.backend_tokenizer.pre_tokenizer.__getstate__() == expected
    model = load_gguf(result.path)
    for text in DEFAULT_TEXTS + EXTRA_TEXTS:
        want = hf_tok(text, add_special_tokens=False)["input_ids"]
        assert list(model.tokenize(text, add_special=False, parse_special=True)) == want, text


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(ExportError, match=r"GPT2LMHeadModel.*LlamaForCausalLM \(llama\), Qwen2ForCausalLM \(qwen2\)"):
        convert_hf_to_gguf(tmp_path, tmp_path / "x.gguf")
    assert not list(tmp_path.glob("*.gguf*"))


def test_unknown_dtype_and_missing_weights(tmp_path):
    with pytest.raises(ExportError, match=r"unknown GGUF dtype 'q4'.*\['f16', 'f32'\]"):
        convert_hf_to_gguf(tmp_path, tmp_path / "x.gguf", dtype="q4")
    shutil.copy(resolve_backbone("tiny-llama") / "config.json", tmp_path / "config.json")
    with pytest.raises(ExportError, match="no model.safetensors"):
        convert_hf_to_gguf(tmp_path, tmp_path / "x.gguf")


@pytest.mark.parametrize("distinct_head", [False, True])
def test_qwen2_with_tied_embeddings(tiny, tmp_path, distinct_head):
    """Qwen2.5-0.5B ties its embeddings: no output.weight, llama.cpp reuses token_embd. A
    config that says "tied" next to a different lm_head.weight is not tied (as transformers)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from bua.export.merge import copy_tokenizer_files

    src = tiny["qwen2"][1].hf_dir
    config = AutoConfig.from_pretrained(str(src), tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_pretrained(str(src), config=config, dtype=torch.float32)
    if not distinct_head:
        model.lm_head.weight = model.model.embed_tokens.weight
    tied = tmp_path / "tied"
    model.save_pretrained(str(tied))
    copy_tokenizer_files(src, tied)
    result = convert_hf_to_gguf(tied, tmp_path / "tied.gguf", progress=False)
    assert result.tied_embeddings is not distinct_head
    has_output = "output.weight" in {t.name for t in gguf.GGUFReader(result.path).tensors}
    assert has_output is distinct_head
    parity = logits_parity(HFReference(tied), load_gguf(result.path), DEFAULT_TEXTS[:1])
    assert parity.within(F16_REL_TOL), parity
