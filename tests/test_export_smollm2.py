"""The real SmolLM2-135M-Instruct (llama arch, tied embeddings) through bua-export to q4_k_m.

The f16 GGUF must give transformers' greedy answer token for token, on the bundle's own
prompt and on SmolLM2's chat template; llama-cpp-python must chat with the GGUF as it is.
"""
from __future__ import annotations

import pytest

from bua.backbones import resolve_backbone
from bua.chat import ChatFormat
from bua.dialogue import default_template
from bua.export.parity import F16_REL_TOL, HFReference, greedy_parity, load_gguf
from bua.export.pipeline import export_bundle
from bua.runtime.bundle import Bundle
from bua.vocab import Vocabulary

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def smollm2_bundle(tmp_path_factory):
    from bua.models.encoder import BehaviorEncoder, EncoderConfig
    from bua.models.projector import Projector, ProjectorConfig

    root = tmp_path_factory.mktemp("smollm2")
    backbone = resolve_backbone("smollm2-135m-instruct")
    vocab = Vocabulary(["check weather", "commute to work", "have lunch", "sleep"], ["home", "office", "metro"])
    encoder = BehaviorEncoder(EncoderConfig.tiny(vocab.n_behaviors, vocab.n_locations))
    encoder.save(root / "encoder")
    Projector(ProjectorConfig(in_dim=encoder.config.d_model, out_dim=576)).save(root / "projector")
    out = root / "bundle"
    summary = export_bundle(
        backbone, None, root / "encoder", root / "projector", vocab, ChatFormat.from_tokenizer(backbone),
        default_template(), out, "q4_k_m", backbone_name="smollm2-135m-instruct", keep_f16=True,
        n_threads=1, progress=lambda msg: None,
    )
    return Bundle.load(out, verify=True), summary, backbone


def test_smollm2_f16_matches_transformers(smollm2_bundle):
    bundle, summary, _ = smollm2_bundle
    assert (bundle.backbone.arch, bundle.n_embd, bundle.quant) == ("llama", 576, "q4_k_m")
    parity = bundle.parity
    assert parity["tokenization"]["ok"]
    assert parity["logits_reference"]["rel_diff"] <= F16_REL_TOL
    assert parity["logits_reference"]["argmax_agreement"] == 1.0
    greedy = parity["greedy_reference"]
    assert greedy["match"], greedy
    assert "Paris" in greedy["hf_text"]
    assert set(summary.gguf_sizes) == {"f16", "q4_k_m"}
    assert summary.gguf_sizes["q4_k_m"] < 0.45 * summary.gguf_sizes["f16"]


def test_smollm2_greedy_with_its_own_chat_template(smollm2_bundle):
    bundle, _, backbone = smollm2_bundle
    hf = HFReference(backbone)
    prompt = hf.tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                              add_generation_prompt=True)
    result = greedy_parity(hf, load_gguf(bundle.reference_gguf_path), prompt, max_new_tokens=32)
    assert result.match, (result.hf_text, result.gguf_text)
    assert result.gguf_text.strip() == "The capital of France is Paris."


def test_smollm2_q4_k_m_reports_its_fallbacks(smollm2_bundle):
    bundle, summary, _ = smollm2_bundle
    quant = bundle.manifest["quantization"]
    # width 576 is not a multiple of 256: most matrices fall back from Q4_K (to Q5_0) or Q6_K (to Q8_0)
    assert len(quant["fallbacks"]) == 180
    assert {f["type"] for f in quant["fallbacks"]} == {"Q5_0", "Q8_0"}
    assert quant["type_counts"]["Q4_K"] == 16  # the ffn_down rows are 1536 wide: real Q4_K
    assert "Q5_0 instead of Q4_K (fallback: ncols 576 not divisible by 256" in summary.text()


def test_llama_cpp_python_chats_with_the_exported_gguf(smollm2_bundle):
    import llama_cpp

    bundle, _, _ = smollm2_bundle
    llm = llama_cpp.Llama(model_path=str(bundle.reference_gguf_path), n_ctx=512, n_threads=1, verbose=False)
    reply = llm.create_chat_completion(messages=[{"role": "user", "content": QUESTION}], max_tokens=24, temperature=0.0)
    assert "Paris" in reply["choices"][0]["message"]["content"]
    assert reply["choices"][0]["finish_reason"] == "stop"
    quantized = llama_cpp.Llama(model_path=str(bundle.gguf_path), n_ctx=512, n_threads=1, verbose=False)
    reply = quantized.create_chat_completion(
        messages=[{"role": "user", "content": QUESTION}], max_tokens=8, temperature=0.0
    )
    assert reply["choices"][0]["message"]["content"].strip()


def test_on_device_predictor_runs_the_smollm2_bundle(smollm2_bundle):
    """The runtime on the real 135M model: explanation rounds, scoring, constrained generation."""
    from bua.events import Event
    from bua.runtime.predictor import OnDevicePredictor

    bundle, _, _ = smollm2_bundle
    predictor = OnDevicePredictor.from_bundle(bundle.path, n_threads=1, max_answer_tokens=16, max_generation_tokens=64)
    history = [Event(0, 420 + 30 * i, i % 3, i % 4) for i in range(12)]
    result = predictor.predict(history, top_k=4, explain=True)
    assert sorted(s.behavior for s in result.top) == sorted(predictor.vocab.behaviors)
    assert sum(s.probability for s in result.top) == pytest.approx(1.0, abs=1e-6)
    assert list(result.explanation) == ["key_behaviors", "patterns", "summary"]
    assert all(result.explanation.values())
    fast = predictor.predict(history, explain=False)
    assert fast.prompt_tokens < result.prompt_tokens
    day = predictor.generate(history, explain=False)
    assert day.events and {e.day for e in day.events} == {1}
