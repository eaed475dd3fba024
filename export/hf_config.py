"""Reads an HF causal-LM checkpoint's config.json into the hyperparameters llama.cpp needs."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bua.export.errors import ExportError

# HF class name -> llama.cpp (GGUF) architecture name.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}


@dataclass(frozen=True)
class HFModelSpec:
    hf_arch: str
    arch: str              # GGUF / llama.cpp architecture name
    name: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx: int
    vocab_size: int
    rope_theta: float
    rope_linear_factor: float | None  # linear RoPE scaling factor, None = no scaling
    rms_eps: float
    tied_embeddings: bool


def supported_architectures_text() -> str:
    return ", ".join(f"{hf} ({gg})" for hf, gg in SUPPORTED_ARCHITECTURES.items())


def _rope(config: dict[str, Any]) -> tuple[float, float | None]:
    params = config.get("rope_parameters")
    if not isinstance(params, dict):  # transformers < 5 layout
        params = dict(config.get("rope_scaling") or {})
        params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    if "full_attention" in params:  # per-layer-type layout
        params = params["full_attention"]
    kind = params.get("rope_type", params.get("type")) or "default"
    if kind == "default":
        return float(params["rope_theta"]), None
    if kind == "linear":
        return float(params["rope_theta"]), float(params["factor"])
    raise ExportError(
        f"RoPE scaling {kind!r} is not supported by bua's converter (supported: default, linear)"
    )


def read_hf_config(hf_dir: Path) -> HFModelSpec:
    """Parses hf_dir/config.json; raises ExportError for unsupported models."""
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise ExportError(f"{path} is missing: {hf_dir} is not an HF checkpoint directory")
    config = json.loads(path.read_text(encoding="utf-8"))
    if "text_config" in config and "hidden_size" not in config:
        raise ExportError(f"{path}: multimodal checkpoints are not supported; export the text model")
    archs = config.get("architectures") or []
    hf_arch = archs[0] if archs else f"<none; model_type {config.get('model_type')!r}>"
    if hf_arch not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"unsupported architecture {hf_arch} in {path}; bua-export supports "
            f"{supported_architectures_text()}"
        )
    arch = SUPPORTED_ARCHITECTURES[hf_arch]
    if config.get("use_sliding_window"):
        raise ExportError(f"{path}: sliding-window attention is not supported by llama.cpp's {arch}")
    if config.get("mlp_bias"):
        raise ExportError(f"{path}: MLP biases (mlp_bias=true) are not supported by llama.cpp's {arch}")
    if config.get("hidden_act", "silu") != "silu":
        raise ExportError(f"{path}: hidden_act {config.get('hidden_act')!r} is not supported (silu only)")
    n_embd = int(config["hidden_size"])
    n_head = int(config["num_attention_heads"])
    theta, linear = _rope(config)
    return HFModelSpec(
        hf_arch=hf_arch,
        arch=arch,
        name=str(config.get("_name_or_path") or config.get("_model_name_or_path") or Path(hf_dir).name),
        n_layer=int(config["num_hidden_layers"]),
        n_embd=n_embd,
        n_ff=int(config["intermediate_size"]),
        n_head=n_head,
        n_head_kv=int(config.get("num_key_value_heads") or n_head),
        head_dim=int(config.get("head_dim") or n_embd // n_head),
        n_ctx=int(config.get("max_position_embeddings", 2048)),
        vocab_size=int(config["vocab_size"]),
        rope_theta=theta,
        rope_linear_factor=linear,
        rms_eps=float(config["rms_norm_eps"]),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
    )
