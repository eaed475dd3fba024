"""Random-weight HF checkpoints with a real model's exact shape (timings depend on shapes and
quant types, not on weight values).

There is no Qwen tokenizer offline, so these use SmolLM2's tokenizer (49152 tokens) with the
embedding matrix padded to the shape's vocabulary (151936 for Qwen2.5): `bua-export` writes the
ids the tokenizer lacks as unused `[PAD<id>]` tokens, as llama.cpp's own converter does for
Qwen2.5's 151936 rows > 151665 tokens. Weights are written in float16 (half the disk; loaders
upcast as they need).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    name: str
    arch: str                  # HF family: "qwen2" (q/k/v biases) or "llama"
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool = True
    rope_theta: float = 1_000_000.0

    @property
    def n_params(self) -> int:
        """Parameter count (tied embeddings counted once)."""
        head_dim = self.hidden // self.heads
        q = self.hidden * self.hidden + (self.hidden if self.arch == "qwen2" else 0)
        kv = 2 * (self.hidden * self.kv_heads * head_dim + (self.kv_heads * head_dim if self.arch == "qwen2" else 0))
        layer = q + kv + self.hidden * self.hidden + 3 * self.hidden * self.intermediate + 2 * self.hidden
        emb = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * layer + emb + self.hidden


QWEN25_05B = Shape("qwen2.5-0.5b-shape", "qwen2", 896, 24, 14, 2, 4864, 151936)
QWEN25_15B = Shape("qwen2.5-1.5b-shape", "qwen2", 1536, 28, 12, 2, 8960, 151936)
# Smoke-mode stand-ins: same code path (padded 151936 vocabulary, q/k/v biases), seconds to build.
TINY_QWEN_A = Shape("tiny-qwen2-padded-a", "qwen2", 64, 2, 4, 2, 128, 151936)
TINY_QWEN_B = Shape("tiny-qwen2-padded-b", "qwen2", 128, 2, 4, 2, 256, 151936)


def build_random_checkpoint(shape: Shape, tokenizer_dir: Path, out: Path, seed: int = 0) -> None:
    """Writes an HF checkpoint of `shape` with random weights and `tokenizer_dir`'s tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if len(tokenizer) > shape.vocab:
        raise ValueError(f"{shape.name}: the tokenizer has {len(tokenizer)} tokens, more than the "
                         f"shape's vocabulary {shape.vocab}")
    config = AutoConfig.for_model(
        shape.arch,
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=shape.rope_theta,
        tie_word_embeddings=shape.tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    with torch.no_grad():  # HF zero-initializes biases; give them values like a trained model's
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, 0.02)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
