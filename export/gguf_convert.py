"""HF checkpoint (LlamaForCausalLM / Qwen2ForCausalLM, safetensors) -> GGUF (f16 or f32).

Written on gguf-py. Tensors are streamed one at a time from the safetensors files into the
GGUF (header and tensor index first, then the data), so memory stays at one tensor.

Layout rules llama.cpp expects:
- llama: q_proj / k_proj rows are permuted from HF's rotate-half RoPE layout to llama.cpp's
  interleaved one (per head, the two halves of the head dimension are interleaved). Qwen2 uses
  NEOX RoPE in llama.cpp, which is HF's layout: no permutation.
- 1-D tensors (norms, biases) stay f32; 2-D weights become the requested dtype.
- tied embeddings: no output.weight (llama.cpp reuses token_embd.weight). As in transformers,
  a checkpoint whose config ties but which holds a different lm_head.weight is not tied.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np

from bua.export.errors import ExportError
from bua.export.gguf_vocab import BpeVocab, add_tokenizer
from bua.export.hf_config import HFModelSpec, read_hf_config
from bua.fsio import atomic_output

GGUF_DTYPES = {"f16": np.float16, "f32": np.float32}
_FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}
_SKIPPED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


@dataclass(frozen=True)
class ConversionResult:
    path: Path
    arch: str
    dtype: str
    pre_tokenizer: str
    n_tensors: int
    n_params: int
    size_bytes: int
    tied_embeddings: bool


@dataclass(frozen=True)
class _Planned:
    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]
    out_dtype: type
    transform: Callable[[np.ndarray], np.ndarray] | None


def permute_for_llama_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half q/k rows -> llama.cpp's interleaved RoPE rows (weights or biases).

    Rows are [n_head * head_dim]; within each head, row j < head_dim/2 (first half) and row
    j + head_dim/2 (second half) become rows 2j and 2j+1.
    """
    rows = w.shape[0]
    return (
        w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def safetensors_files(hf_dir: Path) -> dict[str, Path]:
    """Maps every tensor name to the safetensors file holding it."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: hf_dir / fname for name, fname in weight_map.items()}
    single = hf_dir / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return {name: single for name in f.keys()}
    raise ExportError(
        f"{hf_dir} has no model.safetensors (or sharded index): save the model with "
        "save_pretrained(safe_serialization=True)"
    )


def _effectively_tied(spec: HFModelSpec, files: dict[str, Path]) -> bool:
    """transformers ties lm_head to the embeddings only when the config says so and the
    checkpoint has no lm_head.weight of different values; mirror that."""
    if not spec.tied_embeddings or "lm_head.weight" not in files:
        return spec.tied_embeddings
    from safetensors import safe_open

    tensors = []
    for name in ("lm_head.weight", "model.embed_tokens.weight"):
        with safe_open(str(files[name]), framework="pt") as f:
            tensors.append(f.get_tensor(name))
    return bool(tensors[0].shape == tensors[1].shape and (tensors[0] == tensors[1]).all())


def _plan(spec: HFModelSpec, files: dict[str, Path], dtype: str) -> list[_Planned]:
    from safetensors import safe_open

    arch = gguf.MODEL_ARCH[spec.arch.upper()]
    name_map = gguf.get_tensor_name_map(arch, spec.n_layer)
    allowed = set(gguf.MODEL_TENSORS[arch])
    if not spec.tied_embeddings and "lm_head.weight" not in files:
        raise ExportError("config says tie_word_embeddings=false but the checkpoint has no lm_head.weight")

    shapes: dict[str, tuple[int, ...]] = {}
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt") as f:
            for name in names:
                shapes[name] = tuple(f.get_slice(name).get_shape())

    plans: list[_Planned] = []
    for hf_name in sorted(files, key=_tensor_order):
        if _SKIPPED.search(hf_name) or (spec.tied_embeddings and hf_name == "lm_head.weight"):
            continue
        found = name_map.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None or found[0] not in allowed:
            raise ExportError(
                f"tensor {hf_name!r} has no counterpart in llama.cpp's {spec.arch} architecture; "
                f"bua-export handles plain {spec.hf_arch} checkpoints (merge adapters first)"
            )
        shape = shapes[hf_name]
        transform = None
        if spec.arch == "llama" and re.search(r"self_attn\.(q|k)_proj\.(weight|bias)$", hf_name):
            heads = spec.n_head if ".q_proj." in hf_name else spec.n_head_kv
            transform = _permuter(heads)
        out_dtype = GGUF_DTYPES[dtype] if len(shape) >= 2 else np.float32
        plans.append(_Planned(hf_name, found[1], shape, out_dtype, transform))
    return plans


def _permuter(n_head: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda w: permute_for_llama_rope(w, n_head)


def _tensor_order(name: str) -> tuple[int, str]:
    m = re.search(r"\.layers\.(\d+)\.", name)
    if m:
        return int(m.group(1)) + 1, name
    return (0 if "embed_tokens" in name else 1_000_000), name


def _add_hparams(writer: gguf.GGUFWriter, spec: HFModelSpec, dtype: str, name: str) -> None:
    writer.add_name(name)
    writer.add_block_count(spec.n_layer)
    writer.add_context_length(spec.n_ctx)
    writer.add_embedding_length(spec.n_embd)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_freq_base(spec.rope_theta)
    if spec.rope_linear_factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(spec.rope_linear_factor)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_file_type(_FILE_TYPES[dtype])
    writer.add_vocab_size(spec.vocab_size)
    writer.add_rope_dimension_count(spec.head_dim)
    if spec.head_dim * spec.n_head != spec.n_embd:
        writer.add_key_length(spec.head_dim)
        writer.add_value_length(spec.head_dim)


def _load_tensors(plans: list[_Planned], files: dict[str, Path]) -> Iterator[tuple[_Planned, np.ndarray]]:
    import torch
    from safetensors import safe_open

    handles: dict[Path, object] = {}
    try:
        for plan in plans:
            path = files[plan.hf_name]
            if path not in handles:
                handles[path] = safe_open(str(path), framework="pt").__enter__()
            data = handles[path].get_tensor(plan.hf_name).to(torch.float32).numpy()
            if plan.transform is not None:
                data = plan.transform(data)
            yield plan, np.ascontiguousarray(data.astype(plan.out_dtype, copy=False))
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)


def convert_hf_to_gguf(
    hf_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    dtype: str = "f16",
    name: str | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Converts an HF LlamaForCausalLM / Qwen2ForCausalLM checkpoint to a GGUF file.

    dtype: "f16" (2-D weights f16, norms/biases f32) or "f32". The file is written to a temp
    name beside out_path and renamed when complete. Raises ExportError for unsupported models.
    """
    if dtype not in GGUF_DTYPES:
        raise ExportError(f"unknown GGUF dtype {dtype!r}; convert_hf_to_gguf writes {sorted(GGUF_DTYPES)}")
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    spec = read_hf_config(hf_dir)
    files = safetensors_files(hf_dir)
    spec = dataclasses.replace(spec, tied_embeddings=_effectively_tied(spec, files))
    plans = _plan(spec, files, dtype)

    with atomic_output(out_path) as tmp:
        writer = gguf.GGUFWriter(tmp, spec.arch)
        _add_hparams(writer, spec, dtype, name or spec.name)
        vocab: BpeVocab = add_tokenizer(writer, hf_dir, spec.vocab_size)
        for plan in plans:
            nbytes = int(np.prod(plan.shape)) * np.dtype(plan.out_dtype).itemsize
            writer.add_tensor_info(plan.gguf_name, plan.shape, np.dtype(plan.out_dtype), nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        n_params = 0
        try:
            for plan, data in _progress(_load_tensors(plans, files), len(plans), progress, out_path.name):
                if data.shape != plan.shape:
                    raise ExportError(f"{plan.hf_name}: shape {data.shape} != header shape {plan.shape}")
                writer.write_tensor_data(data)
                n_params += data.size
        finally:
            writer.close()
    return ConversionResult(
        path=out_path,
        arch=spec.arch,
        dtype=dtype,
        pre_tokenizer=vocab.pre,
        n_tensors=len(plans),
        n_params=n_params,
        size_bytes=out_path.stat().st_size,
        tied_embeddings=spec.tied_embeddings,
    )


def _progress(items: Iterator, total: int, enabled: bool, label: str) -> Iterator:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=f"GGUF {label}", unit="tensor", leave=False)
