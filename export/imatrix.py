"""An importance matrix for llama.cpp's quantizer, from the curriculum's own dialogues.

llama.cpp quantizes each weight row to minimize a weighted error; with an importance matrix the
weight of column j is the mean square of the activation that multiplies it (what llama.cpp's
`llama-imatrix` tool measures on a text corpus). bua's prompts are not text: they carry soft
tokens, so the statistics come from the trained PyTorch model running stage-2 dialogues of the
run's training users (soft tokens included), with a forward pre-hook on every linear layer of
the LLM. LoRA layers are hooked at their base layer: its input is the input the merged weight
will see. The result maps GGUF tensor names to float32 vectors of the tensor's row width, as
`llama_model_quantize_params.imatrix` takes them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

# HF module name (llama / qwen2 layout) -> GGUF tensor name (llama.cpp's naming)
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.(\w+?)(?:\.base_layer)?$")
_GGUF_SUFFIX = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def gguf_tensor_name(module_name: str, tied_output: bool) -> str | None:
    """The GGUF weight a HF linear module becomes (None for modules that are not exported
    matmuls, e.g. a LoRA adapter's own A/B); a tied LM head is the token embedding."""
    if module_name.endswith("lm_head"):
        return "token_embd.weight" if tied_output else "output.weight"
    m = _LAYER.search(module_name)
    if m is None or m.group(3) not in _GGUF_SUFFIX:
        return None
    return f"blk.{m.group(1)}.{_GGUF_SUFFIX[m.group(3)]}.weight"


@dataclass
class ImportanceMatrix:
    """Per GGUF tensor: the mean square of each input column over `tokens` calibration tokens."""

    values: dict[str, np.ndarray]
    dialogues: int
    tokens: int

    def summary(self) -> str:
        return f"importance matrix: {len(self.values)} tensors from {self.dialogues} dialogues, {self.tokens:,} tokens"


def collect(lm, run: Callable[[], None], tied_output: bool) -> dict[str, tuple[np.ndarray, int]]:
    """Calls `run()`, which feeds `lm` (one dialogue per forward, so no padding reaches the
    statistics), with hooks on `lm`'s linear layers; returns GGUF name -> (mean square of each
    input column, rows seen). The LM head sees only the positions whose logits are computed."""
    import torch

    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}
    hooks = []

    def hook_for(name: str):
        def pre_hook(module, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] = sums[name] + (x * x).sum(dim=0) if name in sums else (x * x).sum(dim=0)
            rows[name] = rows.get(name, 0) + x.shape[0]
        return pre_hook

    for module_name, module in lm.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        name = gguf_tensor_name(module_name, tied_output)
        if name is not None:
            hooks.append(module.register_forward_pre_hook(hook_for(name)))
    if not hooks:
        raise ValueError("no exportable linear layers found to calibrate (unknown module names)")
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return {name: ((s / rows[name]).numpy().astype(np.float32), rows[name]) for name, s in sums.items() if rows[name]}


def from_run(run_dir: str | Path, n_dialogues: int = 64, stage: str | None = None,
             progress: bool = True) -> ImportanceMatrix:
    """The importance matrix of a curriculum run's model (`stage`, default the final one) on
    `n_dialogues` of its stage-2 training dialogues (evenly spaced over the stage's examples:
    every dialogue kind)."""
    import torch
    from tqdm import tqdm

    from bua.training.build import load_trained
    from bua.training.collate import collate
    from bua.training.data import build_stage, prepare

    if n_dialogues < 1:
        raise ValueError(f"n_dialogues must be at least 1, got {n_dialogues}")
    model, config, _ = load_trained(run_dir, stage, "cpu")
    examples = build_stage(prepare(config.data), "stage2", config.stage("stage2"), config.data, model).train
    picked = [examples[int(i)] for i in np.linspace(0, len(examples) - 1, min(n_dialogues, len(examples)))]
    tied = bool(getattr(model.lm.config, "tie_word_embeddings", False))

    def run() -> None:
        with torch.no_grad():
            for example in tqdm(picked, desc="imatrix", disable=not progress, leave=False):
                model(collate([example], model.pad_id))

    stats = collect(model.lm, run, tied)
    tokens = sum(len(e) for e in picked)
    return ImportanceMatrix({name: v for name, (v, _) in stats.items()}, len(picked), tokens)
