"""llama.cpp quantization of converted GGUFs, and the per-tensor fallback report."""
from __future__ import annotations

import re

import gguf
import pytest
from test_export_fixtures import sharpened_backbone

from bua.export.errors import ExportError
from bua.export.gguf_convert import convert_hf_to_gguf
from bua.export.parity import DEFAULT_TEXTS, HFReference, load_gguf, logits_parity
from bua.export.quantize import QUANT_TYPES, inspect_quantization, parse_fallbacks, quantize_gguf


@pytest.fixture(scope="module")
def f16(tmp_path_factory):
    out = tmp_path_factory.mktemp("quant")
    hf_dir = sharpened_backbone("llama", out / "hf")
    return convert_hf_to_gguf(hf_dir, out / "model-f16.gguf", progress=False).path, hf_dir


@pytest.fixture(scope="module")
def quantized(f16, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized")
    return {q: quantize_gguf(f16[0], out / f"model-{q}.gguf", q, n_threads=1) for q in QUANT_TYPES}


def test_required_types_are_offered():
    assert {"f32", "f16", "q8_0", "q5_k_m", "q4_k_m", "q4_0"} <= set(QUANT_TYPES)


@pytest.mark.parametrize("quant", list(QUANT_TYPES))
def test_quantized_model_runs_and_report_matches_file(quantized, quant):
    report = quantized[quant]
    assert report.path.is_file() and report.quant == quant
    types = {t.name: gguf.GGMLQuantizationType(t.tensor_type).name for t in gguf.GGUFReader(report.path).tensors}
    assert sum(report.type_counts.values()) == len(types)
    for dev in report.deviations:
        assert types[dev.name] == dev.type != report.base_type
    # every 2-D tensor not listed as a deviation has the base type
    listed = {d.name for d in report.deviations}
    two_d = [n for n in types if not n.endswith("norm.weight")]
    assert all(types[n] == report.base_type for n in two_d if n not in listed)

    model = load_gguf(report.path)
    from bua.runtime.native import load_native

    session = load_native().Session(model, n_ctx=64, n_threads=1)
    session.eval_tokens(model.tokenize("Mon 08:10 @home check weather", add_special=False, parse_special=True))
    assert session.generate(4)["stop_reason"] in ("max_tokens", "eog")


def test_k_quants_fall_back_on_width_64_and_say_so(quantized):
    # widths 64 (hidden) and 128 (MLP) are not multiples of the 256-wide K-quant blocks: every
    # K-quant tensor falls back, and the report says so
    for quant in ("q4_k_m", "q5_k_m", "q6_k"):
        report = quantized[quant]
        assert len(report.fallbacks) >= 12, quant
        assert all(re.match(r"ncols (64|128) not divisible by 256: wanted q\d_K", d.detail) for d in report.fallbacks)
        assert f"instead of {report.base_type} (fallback" in report.summary()
    # 32-wide blocks fit; q4_0 still wants q6_K for the (tied) output matrix, which falls back
    assert not quantized["q8_0"].fallbacks
    assert [(d.name, d.type) for d in quantized["q4_0"].fallbacks] == [("token_embd.weight", "Q8_0")]
    assert not quantized["f16"].deviations and not quantized["f32"].deviations


def test_sizes_shrink_with_bits(quantized):
    size = {q: r.size_bytes for q, r in quantized.items()}
    assert size["f32"] > size["f16"] > size["q8_0"] > size["q4_0"]


def test_q8_0_stays_close_to_transformers(f16, quantized):
    hf = HFReference(f16[1])
    parity = logits_parity(hf, load_gguf(quantized["q8_0"].path), DEFAULT_TEXTS[:1])
    assert parity.rel_diff < 0.1 and parity.argmax_agreement >= 0.9, parity


def test_unknown_quant_lists_valid_ones(f16, tmp_path):
    with pytest.raises(ExportError, match=r"unknown quant type 'q3_xx'; valid: f32, f16, q8_0.*q4_k_m, q4_0"):
        quantize_gguf(f16[0], tmp_path / "x.gguf", "q3_xx")
    with pytest.raises(ExportError, match="unknown quant type"):
        inspect_quantization(f16[0], "nope")


def test_failed_quantization_leaves_nothing(f16, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(f16[0].read_bytes()[:1000])
    with pytest.raises(ExportError, match="failed to quantize .*status"):
        quantize_gguf(broken, tmp_path / "out.gguf", "q8_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.gguf"]
    with pytest.raises(ExportError, match="not found"):
        quantize_gguf(tmp_path / "missing.gguf", tmp_path / "out.gguf", "q8_0")


def test_parse_fallbacks_reads_llama_cpp_warnings():
    log = (
        "[   6/ 272] blk.0.attn_q.weight - [576, 576, 1, 1], type = f16, converting to q5_0\n"
        "warning: blk.0.attn_q.weight                  - ncols    576 not divisible by 256 "
        "(required for type    q4_K) -> falling back to    q5_0\n"
    )
    assert parse_fallbacks(log) == {"blk.0.attn_q.weight": "ncols 576 not divisible by 256: wanted q4_K, got q5_0"}
