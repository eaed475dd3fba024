"""Models the export tests build: tiny backbones with decisive attention, and LoRA adapters.

The cached tiny backbones have init-scale weights (std 0.02): attention is near uniform and a
wrong RoPE layout moves the logits by less than f16 noise. `sharpened_backbone` scales the
attention and MLP weights so every part of the network shows in the logits; the tests here
check that it does. Other test modules import these helpers.
"""
from __future__ import annotations

from pathlib import Path

from bua.backbones import resolve_backbone

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def sharpened_backbone(arch: str, out: Path) -> Path:
    """tiny-<arch> with q/k weights x8 and v/o/MLP weights x4, saved as an HF dir at out."""
    import torch
    from transformers import AutoModelForCausalLM

    from bua.export.merge import copy_tokenizer_files

    if (out / "config.json").is_file():
        return out
    src = resolve_backbone(f"tiny-{arch}")
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "q_proj" in name or "k_proj" in name:
                param.mul_(8.0)
            elif any(k in name for k in ("v_proj", "o_proj", "mlp.")):
                param.mul_(4.0)
    model.save_pretrained(str(out))
    copy_tokenizer_files(src, out)
    return out


def make_lora_adapter(backbone_dir: Path, out: Path, targets=LORA_TARGETS, r: int = 4, seed: int = 0) -> Path:
    """A peft LoRA adapter for backbone_dir with random non-zero A and B (so merging changes it)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(backbone_dir), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets)))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    peft_model.save_pretrained(str(out))
    return out


def test_sharpened_backbone_attention_is_not_uniform(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    path = sharpened_backbone("llama", tmp_path / "sharp")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager")
    ids = torch.arange(100, 132)[None]
    with torch.no_grad():
        attn = model(ids, output_attentions=True).attentions[0][0]  # [heads, q, k]
    # the last query's strongest key takes far more than a uniform 1/32 share
    assert attn[:, -1].max(dim=-1).values.min() > 3 / 32


def test_lora_adapter_changes_the_model(tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir = sharpened_backbone("qwen2", tmp_path / "sharp")
    adapter = make_lora_adapter(base_dir, tmp_path / "adapter")
    assert (adapter / "adapter_config.json").is_file()
    ids = torch.arange(200, 220)[None]
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    with torch.no_grad():
        before = base(ids).logits
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        after = merged(ids).logits
    assert (after - before).abs().max() > 0.1
