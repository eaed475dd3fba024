"""bua-export end to end on tiny models: LoRA merge, GGUF + parity, quantization, ONNX, manifest,
atomic replacement, the CLI over a run directory, and the clear errors."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_export_fixtures import make_lora_adapter, sharpened_backbone

from bua.chat import ChatFormat
from bua.dialogue import default_template
from bua.export import pipeline
from bua.export.cli import main as cli_main
from bua.export.errors import ExportError
from bua.export.parity import DEFAULT_TEXTS, F16_REL_TOL, HFReference, load_gguf, logits_parity
from bua.export.pipeline import export_bundle
from bua.runtime.bundle import Bundle
from bua.vocab import Vocabulary

BEHAVIORS = ["check weather", "commute to work", "have lunch", "go to the gym", "sleep", "drink coffee"]
LOCATIONS = ["home", "office", "gym", "metro", "cafe"]


@dataclass
class Pieces:
    backbone: Path
    adapter: Path
    encoder: Path
    projector: Path
    vocab: Vocabulary
    chat: ChatFormat


def _make_pieces(root: Path, arch: str, projector_width: int = 64) -> Pieces:
    from bua.models.encoder import BehaviorEncoder, EncoderConfig
    from bua.models.projector import Projector, ProjectorConfig

    root.mkdir(parents=True, exist_ok=True)
    backbone = sharpened_backbone(arch, root / "backbone")
    adapter = root / "adapter"
    if not adapter.exists():
        make_lora_adapter(backbone, adapter)
    vocab = Vocabulary(BEHAVIORS, LOCATIONS)
    encoder = BehaviorEncoder(EncoderConfig.tiny(vocab.n_behaviors, vocab.n_locations))
    encoder.save(root / "encoder")
    projector = Projector(ProjectorConfig(in_dim=encoder.config.d_model, out_dim=projector_width))
    projector.save(root / f"projector{projector_width}")
    return Pieces(backbone, adapter, root / "encoder", root / f"projector{projector_width}", vocab,
                  ChatFormat.from_tokenizer(backbone))


def _export(p: Pieces, out: Path, quant: str, **kw):
    return export_bundle(p.backbone, p.adapter, p.encoder, p.projector, p.vocab, p.chat, default_template(),
                         out, quant, n_threads=1, progress=lambda msg: None, **kw)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return _make_pieces(tmp_path_factory.mktemp("qwen2"), "qwen2")


@pytest.fixture(scope="module")
def qwen2_bundle(qwen2, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "qwen2-q4"
    summary = _export(qwen2, out, "q4_k_m", keep_f16=True)
    return out, summary


def test_qwen2_bundle_end_to_end(qwen2, qwen2_bundle):
    out, summary = qwen2_bundle
    bundle = Bundle.load(out, verify=True)
    assert sorted(bundle.files) == ["encoder.onnx", "model-f16.gguf", "model-q4_k_m.gguf", "native/predict.prompt"]
    assert bundle.native_prompt_path.read_bytes().startswith(b"bua-native-prompt 1\nmodel model-q4_k_m.gguf\n")
    assert (bundle.backbone.arch, bundle.n_embd, bundle.quant) == ("qwen2", 64, "q4_k_m")
    assert bundle.vocab == qwen2.vocab and bundle.chat_format == qwen2.chat
    assert bundle.dialogue_template == default_template()
    assert bundle.soft_tokens.projector_mode == "per_event" and bundle.max_history == 64
    assert bundle.manifest["backbone"]["pre_tokenizer"] == "qwen2"

    parity = bundle.parity
    assert parity["tokenization"]["ok"] and parity["tokenization"]["n_texts"] >= 30
    assert parity["logits_reference"]["rel_diff"] <= F16_REL_TOL
    assert parity["greedy_reference"]["match"]
    assert parity["onnx"]["max_abs_diff"] <= 1e-4
    assert {(c["batch"], c["length"]) for c in parity["onnx"]["checks"]} == {(1, 1), (3, 7), (2, 64)}
    assert "logits_quantized" in parity and "greedy_quantized" in parity
    assert bundle.manifest["quantization"]["fallbacks"]  # width 64 cannot hold 256-wide K-quant blocks
    assert set(summary.gguf_sizes) == {"f16", "q4_k_m"}
    text = summary.text()
    assert "model-q4_k_m.gguf" in text and "tokenization:" in text and "fallback" in text
    assert all((out / rel).stat().st_mode & 0o044 for rel in bundle.files)  # group/other readable


def test_bundle_holds_the_merged_model_not_the_base(qwen2, qwen2_bundle):
    bundle = Bundle.load(qwen2_bundle[0], verify=False)
    gguf_model = load_gguf(bundle.reference_gguf_path)
    base = logits_parity(HFReference(qwen2.backbone), gguf_model, DEFAULT_TEXTS[:1])
    assert base.rel_diff > 0.05, base  # the LoRA moved the logits far beyond f16 noise


def test_bundle_pieces_fit_together(qwen2_bundle):
    """ONNX soft tokens enter the exported GGUF as embedding rows (what the runtime does)."""
    import onnxruntime as ort

    from bua.events import Event, events_to_batch
    from bua.runtime.native import load_native

    bundle = Bundle.load(qwen2_bundle[0], verify=False)
    events = [Event(day=0, minute=480 + 30 * i, location=i % 5, behavior=i % 6) for i in range(9)]
    batch, mask = events_to_batch([events], bundle.max_history)
    session = ort.InferenceSession(str(bundle.encoder_path), providers=["CPUExecutionProvider"])
    soft, soft_mask = session.run(["soft_tokens", "soft_mask"], {"events": batch, "mask": mask})
    rows = np.ascontiguousarray(soft[0][soft_mask[0]], dtype=np.float32)
    assert rows.shape == (bundle.soft_tokens.n_soft(9), bundle.n_embd)
    native = load_native()
    model = native.Model.load(str(bundle.gguf_path))
    s = native.Session(model, n_ctx=256, n_threads=1)
    def tokens(text):
        return model.tokenize(text, add_special=False, parse_special=True)

    s.eval_tokens(tokens("<|im_start|>user\nBehavior history: "))
    s.eval_embeddings(rows)
    s.eval_tokens(tokens("\nPredict.<|im_end|>\n<|im_start|>assistant\n"))
    scores = s.score_continuations([tokens(b + "<|im_end|>") for b in BEHAVIORS])
    assert len(scores) == len(BEHAVIORS) and all(np.isfinite(scores))


def test_existing_bundle_needs_force_and_survives_a_failed_replacement(qwen2, qwen2_bundle, monkeypatch):
    out = qwen2_bundle[0]
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="already exists; pass --force"):
        _export(qwen2, out, "q8_0")

    def broken_onnx(*args, **kwargs):
        raise ExportError("simulated ONNX failure")

    monkeypatch.setattr(pipeline, "export_encoder_onnx", broken_onnx)
    with pytest.raises(ExportError, match="simulated ONNX failure"):
        _export(qwen2, out, "q8_0", force=True, check_parity=False)
    assert (out / "manifest.json").read_bytes() == before
    assert Bundle.load(out, verify=True).quant == "q4_k_m"
    assert _leftovers(out.parent) == []


def test_force_replaces_the_bundle(qwen2, tmp_path):
    out = tmp_path / "bundle"
    _export(qwen2, out, "f16", check_parity=False)
    first = Bundle.load(out)
    assert first.quant == "f16" and first.parity == {"skipped": True, "onnx": first.parity["onnx"]}
    assert sorted(first.files) == ["encoder.onnx", "model-f16.gguf", "native/predict.prompt"]
    _export(qwen2, out, "q4_0", force=True, check_parity=False)
    second = Bundle.load(out)
    assert second.quant == "q4_0"
    assert sorted(second.files) == ["encoder.onnx", "model-q4_0.gguf", "native/predict.prompt"]
    assert _leftovers(tmp_path) == []


def test_force_refuses_a_directory_that_is_not_a_bundle(qwen2, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a bua bundle"):
        _export(qwen2, out, "q8_0", force=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_cheap_errors_come_first_and_leave_nothing(qwen2, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(ExportError, match=r"unknown quant type 'q4_k_x'; valid: f32, f16, q8_0, q6_k, q5_k_m, q5_0, q4_k_m, q4_0"):  # noqa: E501
        _export(qwen2, out, "q4_k_x")

    narrow = _make_pieces(tmp_path / "narrow", "qwen2", projector_width=48)
    with pytest.raises(ExportError, match="projector output width 48 != LLM hidden size 64"):
        _export(narrow, out, "q8_0")

    with pytest.raises(ExportError, match="adapter directory .* does not exist"):
        export_bundle(qwen2.backbone, tmp_path / "no-adapter", qwen2.encoder, qwen2.projector, qwen2.vocab,
                      qwen2.chat, default_template(), out, "q8_0", progress=lambda m: None)

    other_vocab = Vocabulary(BEHAVIORS + ["swim"], LOCATIONS)
    with pytest.raises(ExportError, match="n_behaviors=6 but the vocabulary has 7 behaviors"):
        export_bundle(qwen2.backbone, qwen2.adapter, qwen2.encoder, qwen2.projector, other_vocab,
                      qwen2.chat, default_template(), out, "q8_0", progress=lambda m: None)

    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ExportError, match=r"unsupported architecture GPT2LMHeadModel.*LlamaForCausalLM \(llama\), Qwen2ForCausalLM \(qwen2\)"):  # noqa: E501
        export_bundle(gpt2, None, qwen2.encoder, qwen2.projector, qwen2.vocab, qwen2.chat,
                      default_template(), out, "q8_0", progress=lambda m: None)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_mismatched_adapters_are_named(qwen2, tmp_path):
    # target modules the backbone lacks
    wrong_targets = tmp_path / "wrong-targets"
    shutil.copytree(qwen2.adapter, wrong_targets)
    config = json.loads((wrong_targets / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "c_attn"]
    (wrong_targets / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=r"target modules \['c_attn'\] are not in the backbone"):
        export_bundle(qwen2.backbone, wrong_targets, qwen2.encoder, qwen2.projector, qwen2.vocab,
                      qwen2.chat, default_template(), tmp_path / "b", "q8_0", progress=lambda m: None)

    # an adapter trained on a model of another width
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other-model"
    LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).to(torch.float32).save_pretrained(other)
    foreign = make_lora_adapter(other, tmp_path / "foreign")
    with pytest.raises(ExportError, match=r"\(trained on .*other-model\) does not fit .*lora_[AB]\.weight has shape \[\d+, \d+\] but model\.layers\.\S+ is \[\d+, \d+\]"):  # noqa: E501
        export_bundle(qwen2.backbone, foreign, qwen2.encoder, qwen2.projector, qwen2.vocab,
                      qwen2.chat, default_template(), tmp_path / "b", "q8_0", progress=lambda m: None)

    empty = tmp_path / "empty-adapter"
    empty.mkdir()
    (empty / "adapter_config.json").write_text("{}")
    with pytest.raises(ExportError, match="has no adapter weights"):
        export_bundle(qwen2.backbone, empty, qwen2.encoder, qwen2.projector, qwen2.vocab,
                      qwen2.chat, default_template(), tmp_path / "b", "q8_0", progress=lambda m: None)


def _write_run(root: Path, p: Pieces) -> Path:
    """A finished curriculum run directory, written with the training package's own helpers."""
    from bua.fsio import write_json
    from bua.training.checkpoint import new_run_record, update_stage, write_run

    run = root / "run"
    run.mkdir(parents=True)
    write_run(run, new_run_record({"note": "test"}, "tiny-llama-sharp", p.backbone, "llama", 64, ["stage1", "stage2"]))
    p.vocab.save(run / "vocab.json")
    write_json(run / "chat_format.json", p.chat.to_dict())
    write_json(run / "dialogue_template.json", default_template().to_dict())
    shutil.copytree(p.encoder, run / "encoder")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(p.backbone)).save_pretrained(str(run / "tokenizer"))
    best = run / "stage2" / "best"
    shutil.copytree(p.projector, best)
    shutil.copytree(p.adapter, best / "adapter")
    update_stage(run, "stage1", status="done")
    update_stage(run, "stage2", status="done")
    return run


def test_cli_exports_a_llama_run(tmp_path, capsys):
    pieces = _make_pieces(tmp_path / "llama", "llama")
    run = _write_run(tmp_path, pieces)
    out = tmp_path / "bundle"
    assert cli_main(["--checkpoint", str(run), "--quant", "q8_0", "--out", str(out), "--threads", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "model-q8_0.gguf" in stdout and "identical to the HF tokenizer" in stdout
    bundle = Bundle.load(out)
    assert (bundle.backbone.arch, bundle.backbone.name, bundle.quant) == ("llama", "tiny-llama-sharp", "q8_0")
    assert bundle.manifest["source"]["stage"] == "stage2"
    assert bundle.parity["logits_reference"]["rel_diff"] <= F16_REL_TOL
    assert bundle.parity["greedy_reference"]["match"]

    assert cli_main(["--checkpoint", str(run), "--quant", "q8_0", "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert cli_main(["--checkpoint", str(run), "--quant", "q3_xs", "--out", str(tmp_path / "x")]) == 2
    assert "valid: f32, f16, q8_0" in capsys.readouterr().err
    assert cli_main(["--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "run.json is missing" in capsys.readouterr().err


def test_runtime_predictor_reads_the_bundle(qwen2_bundle):
    from bua import OnDevicePredictor
    from bua.events import Event

    predictor = OnDevicePredictor.from_bundle(qwen2_bundle[0], n_threads=1, max_answer_tokens=8)
    history = [Event(day=1, minute=420 + 45 * i, location=i % 5, behavior=i % 6) for i in range(12)]
    result = predictor.predict(history, top_k=len(BEHAVIORS), explain=False)
    assert sorted(s.behavior for s in result.top) == sorted(BEHAVIORS)
    assert sum(s.probability for s in result.top) == pytest.approx(1.0, abs=1e-6)
    assert result.soft_tokens == 12


def test_console_script_is_installed():
    import subprocess
    import sys

    script = Path(sys.executable).parent / "bua-export"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--checkpoint RUN_DIR" in out and "q4_k_m" in out and "--keep-f16" in out
