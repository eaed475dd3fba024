"""Saving and restoring what a stage trains (projector, LoRA adapter) and the resumable trainer
state (optimizer, scheduler, RNG, step) inside the run directory's stageN/{best,last}."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bua.training.model import BUAModel

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def save_weights(directory: Path, model: BUAModel, with_adapter: bool) -> None:
    """projector.safetensors + projector.json, and adapter/ (peft) when `with_adapter`."""
    model.projector.save(directory)
    if with_adapter:
        model.lm.save_pretrained(str(directory / "adapter"))


def load_projector(model: BUAModel, directory: Path) -> None:
    from safetensors.torch import load_file

    path = Path(directory) / "projector.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no projector.safetensors in {directory}")
    state = load_file(str(path), device=str(model.device))
    model.projector.load_state_dict(state, strict=True)


def load_adapter(model: BUAModel, directory: Path) -> None:
    """Loads a peft adapter saved by `save_weights` into the model's (identically configured) LoRA."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"no {ADAPTER_WEIGHTS} in {directory}")
    result = set_peft_model_state_dict(model.lm, load_file(str(path), device=str(model.device)))
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"adapter {directory} does not fit the model's LoRA: unexpected keys {unexpected[:5]}")


def reset_adapter(model: BUAModel) -> None:
    """Re-initializes every LoRA layer (A random, B zero): the adapter is the identity again."""
    for module in model.lm.modules():
        if hasattr(module, "reset_lora_parameters") and hasattr(module, "lora_A"):
            for name in list(module.lora_A.keys()):
                module.reset_lora_parameters(name, True)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
