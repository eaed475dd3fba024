"""Folding a peft LoRA adapter into its backbone: validation first, then merge_and_unload.

The adapter is checked against the backbone before anything heavy loads, so a wrong adapter
fails with a message that names the module and both shapes rather than a peft stack trace.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from bua.export.errors import ExportError

_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
# Files besides the weights that make an HF checkpoint directory usable (tokenizer, chat template).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    rank: int
    alpha: float
    target_modules: list[str]
    n_lora_modules: int
    base_model: str


def _backbone_shapes(backbone_dir: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    from bua.export.gguf_convert import safetensors_files

    shapes: dict[str, tuple[int, ...]] = {}
    files = safetensors_files(backbone_dir)
    for path in sorted(set(files.values())):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def _adapter_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    return {k: tuple(v.shape) for k, v in state.items()}


def validate_adapter(backbone_dir: str | Path, adapter_dir: str | Path) -> AdapterInfo:
    """Checks that adapter_dir is a LoRA adapter whose every module exists in the backbone with
    matching shapes. Raises ExportError otherwise."""
    backbone_dir, adapter_dir = Path(backbone_dir), Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not adapter_dir.is_dir():
        raise ExportError(f"adapter directory {adapter_dir} does not exist")
    if not config_path.is_file():
        raise ExportError(f"{adapter_dir} is not a peft adapter: adapter_config.json is missing")
    weights = next((adapter_dir / n for n in _ADAPTER_WEIGHTS if (adapter_dir / n).is_file()), None)
    if weights is None:
        raise ExportError(f"{adapter_dir} has no adapter weights ({' or '.join(_ADAPTER_WEIGHTS)})")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    base = str(config.get("base_model_name_or_path") or "<unrecorded>")
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{adapter_dir}: only LoRA adapters can be merged, found {config.get('peft_type')!r}")

    backbone = _backbone_shapes(backbone_dir)
    modules = {name[: -len(".weight")] for name in backbone if name.endswith(".weight")}
    where = f"adapter {adapter_dir} (trained on {base}) does not fit backbone {backbone_dir}"

    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, m) for m in modules):
            raise ExportError(f"{where}: target_modules regex {targets!r} matches no backbone module")
        targets = [targets]
    else:
        missing = [t for t in targets if not any(m == t or m.endswith("." + t) for m in modules)]
        if missing:
            raise ExportError(f"{where}: target modules {missing} are not in the backbone")

    n_modules = 0
    for key, shape in _adapter_shapes(weights).items():
        m = _LORA_KEY.match(key)
        if m is None:
            continue  # modules_to_save copies, embeddings and the like: peft checks those
        module, ab = m["module"], m["ab"]
        target = backbone.get(module + ".weight")
        if target is None:
            raise ExportError(f"{where}: LoRA module {module!r} is not in the backbone")
        out_features, in_features = target[0], target[-1]
        if (ab == "A" and shape[-1] != in_features) or (ab == "B" and shape[0] != out_features):
            raise ExportError(
                f"{where}: {key} has shape {list(shape)} but {module}.weight is {list(target)} "
                f"(in {in_features}, out {out_features})"
            )
        n_modules += ab == "A"
    if n_modules == 0:
        raise ExportError(f"{adapter_dir}: no LoRA weights found in {weights.name}")
    return AdapterInfo(
        path=adapter_dir,
        rank=int(config.get("r", 0)),
        alpha=float(config.get("lora_alpha", 0)),
        target_modules=list(targets),
        n_lora_modules=n_modules,
        base_model=base,
    )


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def merge_adapter(backbone_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Writes backbone + LoRA (merged, fp32) as an HF checkpoint in out_dir (created) and copies
    the backbone's tokenizer files verbatim. Returns out_dir."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    backbone_dir, out_dir = Path(backbone_dir), Path(out_dir)
    validate_adapter(backbone_dir, adapter_dir)
    model = AutoModelForCausalLM.from_pretrained(str(backbone_dir), dtype=torch.float32)
    try:
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ExportError(f"peft could not apply adapter {adapter_dir} to {backbone_dir}: {exc}") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    copy_tokenizer_files(backbone_dir, out_dir)
    return out_dir
