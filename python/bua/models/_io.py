"""Atomic save/load of a module as ``<name>.safetensors`` + ``<name>.json`` in a directory."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bua.fsio import atomic_output, write_bytes


def save_module(module: torch.nn.Module, config: dict[str, Any], directory: str | os.PathLike,
                name: str) -> Path:
    """Save ``module``'s state dict and ``config`` as ``directory/name.{safetensors,json}``.

    Each file is written to a temp path and renamed, so a crash never leaves a half file.
    """
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_output(directory / f"{name}.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_bytes(directory / f"{name}.json", (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return directory


def config_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """``cls(**d)`` for a config dataclass, naming unknown fields instead of a TypeError."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**d)


def load_config(directory: str | os.PathLike, name: str) -> dict[str, Any]:
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {name}.json in {directory}")
    return json.loads(path.read_text())


def load_state(module: torch.nn.Module, directory: str | os.PathLike, name: str) -> None:
    path = Path(directory) / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no {name}.safetensors in {directory}")
    module.load_state_dict(load_file(str(path)), strict=True)
