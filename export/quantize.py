"""GGUF quantization with llama.cpp's own quantizer, and an honest report of what it produced.

gguf-py cannot write K-quants, so this calls `llama_model_quantize` from llama-cpp-python's
libllama. llama.cpp does not quantize every tensor to the requested base type: 1-D tensors stay
f32, the K-quant "mixes" (q4_k_m, q5_k_m) keep some tensors (attn_v, ffn_down, output) at a
higher type, and tensors whose row width is not a multiple of the base type's block size fall
back to another type (e.g. SmolLM2's width 576 is not a multiple of 256, so most of its
q4_k_m tensors become q5_0). `quantize_gguf` reads the result back and lists every deviation,
naming as "fallback" the tensors llama.cpp's log says fell back (its per-tensor warnings are
captured through llama_log_set) and as "mixture" the ones the recipe deliberately put at another type.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import gguf
import numpy as np

from bua.export import QUANT_NAMES
from bua.export.errors import ExportError
from bua.fsio import atomic_output

Q = gguf.GGMLQuantizationType
# quant name -> (llama_ftype, the base tensor type llama.cpp aims for)
QUANT_TYPES: dict[str, tuple[int, gguf.GGMLQuantizationType]] = {
    "f32": (0, Q.F32),
    "f16": (1, Q.F16),
    "q8_0": (7, Q.Q8_0),
    "q6_k": (18, Q.Q6_K),
    "q5_k_m": (17, Q.Q5_K),
    "q5_0": (8, Q.Q5_0),
    "q4_k_m": (15, Q.Q4_K),
    "q4_0": (2, Q.Q4_0),
}
assert tuple(QUANT_TYPES) == QUANT_NAMES


@dataclass(frozen=True)
class TensorDeviation:
    name: str
    shape: tuple[int, ...]  # ggml order: row width first
    type: str
    reason: str             # "fallback" (row width not a multiple of the block) or "mixture"
    detail: str


@dataclass(frozen=True)
class QuantizeReport:
    path: Path
    quant: str
    base_type: str
    size_bytes: int
    type_counts: dict[str, int]
    n_one_dim_f32: int  # norms and biases, kept f32 by design
    deviations: list[TensorDeviation] = field(default_factory=list)

    @property
    def fallbacks(self) -> list[TensorDeviation]:
        return [d for d in self.deviations if d.reason == "fallback"]

    def summary(self) -> str:
        counts = ", ".join(f"{n} {t}" for t, n in sorted(self.type_counts.items(), key=lambda kv: -kv[1]))
        lines = [f"{self.quant}: {self.size_bytes / 2**20:.1f} MiB; tensor types: {counts}"]
        by_detail = Counter((d.reason, d.type, d.detail) for d in self.deviations)
        for (reason, typ, detail), n in sorted(by_detail.items()):
            lines.append(f"  {n} tensor(s) {typ} instead of {self.base_type} ({reason}: {detail})")
        return "\n".join(lines)


def _check_quant(quant: str) -> tuple[int, gguf.GGMLQuantizationType]:
    key = quant.lower()
    if key not in QUANT_TYPES:
        raise ExportError(f"unknown quant type {quant!r}; valid: {', '.join(QUANT_TYPES)}")
    return QUANT_TYPES[key]


_FALLBACK_LINE = re.compile(
    r"warning: (?P<name>\S+)\s+- ncols\s+(?P<ncols>\d+) not divisible by (?P<block>\d+) "
    r"\(required for type\s+(?P<wanted>\w+)\) (?:\(WARNING: must use F16[^)]*\) )?"
    r"-> falling back to\s+(?P<got>\w+)"
)


def parse_fallbacks(log: str) -> dict[str, str]:
    """Tensor name -> explanation, from llama.cpp's quantizer log."""
    return {
        m["name"]: f"ncols {m['ncols']} not divisible by {m['block']}: wanted {m['wanted']}, got {m['got']}"
        for m in _FALLBACK_LINE.finditer(log)
    }


def inspect_quantization(path: Path, quant: str, fallbacks: dict[str, str] | None = None) -> QuantizeReport:
    """Reads a GGUF back and reports each tensor whose type differs from quant's base type.

    fallbacks (from `parse_fallbacks`) says which deviations were forced by the tensor's shape;
    without it, a deviation counts as a fallback when the row width is not a multiple of the
    base type's block.
    """
    _, base = _check_quant(quant)
    block = gguf.GGML_QUANT_SIZES[base][0]
    reader = gguf.GGUFReader(path)
    counts: Counter[str] = Counter()
    deviations: list[TensorDeviation] = []
    one_dim = 0
    for t in reader.tensors:
        typ = Q(t.tensor_type)
        counts[typ.name] += 1
        shape = tuple(int(x) for x in t.shape)
        if len(shape) == 1 or all(s == 1 for s in shape[1:]):
            one_dim += 1
            continue
        if typ == base:
            continue
        if fallbacks is not None and t.name in fallbacks:
            reason, detail = "fallback", fallbacks[t.name]
        elif fallbacks is None and shape[0] % block != 0:
            reason = "fallback"
            detail = f"row width {shape[0]} is not a multiple of {base.name}'s block of {block}"
        else:
            reason = "mixture"
            detail = f"llama.cpp's {quant} recipe picks another type for this tensor"
        deviations.append(TensorDeviation(t.name, shape, typ.name, reason, detail))
    return QuantizeReport(
        path=path,
        quant=quant.lower(),
        base_type=base.name,
        size_bytes=path.stat().st_size,
        type_counts=dict(counts),
        n_one_dim_f32=one_dim,
        deviations=deviations,
    )


def quantize_gguf(
    src_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    quant: str,
    n_threads: int = 0,
    imatrix: Mapping[str, np.ndarray] | None = None,
) -> QuantizeReport:
    """Quantizes an f16/f32 GGUF to `quant` with llama.cpp (atomic write) and reports the result.

    n_threads: 0 = llama.cpp's default (all cores). imatrix: GGUF tensor name -> importance of
    each column (`bua.export.imatrix`); tensors it does not name are quantized without one.
    """
    ftype, _ = _check_quant(quant)
    src, out = Path(src_path), Path(out_path)
    if not src.is_file():
        raise ExportError(f"GGUF to quantize not found: {src}")
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = n_threads
    keep_alive = None
    if imatrix:
        params.imatrix, keep_alive = _imatrix_entries(imatrix)
    with atomic_output(out) as tmp, _captured_llama_log() as log:
        status = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if status != 0:
            tail = "\n".join(log.text.splitlines()[-15:])
            raise ExportError(f"llama.cpp failed to quantize {src} to {quant} (status {status}):\n{tail}")
    del keep_alive  # llama.cpp copied the importance data while quantizing
    return inspect_quantization(out, quant, parse_fallbacks(log.text))


def _imatrix_entries(imatrix: Mapping[str, np.ndarray]):
    """(pointer to the name=NULL-terminated llama_model_imatrix_data array, what it points into)."""
    import ctypes

    import llama_cpp

    buffers = []
    entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
    for i, (name, values) in enumerate(sorted(imatrix.items())):
        data = np.ascontiguousarray(values, dtype=np.float32)
        if data.ndim != 1 or not np.isfinite(data).all():
            raise ExportError(f"importance matrix entry {name!r}: needs a finite 1-D vector, got shape {data.shape}")
        key = name.encode()
        buffers += [data, key]
        entries[i].name = key
        entries[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = data.size
    return ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data)), (entries, buffers)


class _Log:
    def __init__(self) -> None:
        self.pieces: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@contextlib.contextmanager
def _captured_llama_log():
    """Routes llama.cpp's log into a string for the duration, then restores the previous logger.

    The logger is process-global (llama-cpp-python and bua._native each install one), so the
    previous callback is read with llama_log_get and put back afterwards.
    """
    import ctypes

    import llama_cpp

    log = _Log()

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.pieces.append(text.decode("utf-8", errors="replace"))

    previous = llama_cpp.llama_log_callback()
    previous_data = ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(previous), ctypes.byref(previous_data))
    llama_cpp.llama_log_set(collect, None)
    try:
        yield log
    finally:
        llama_cpp.llama_log_set(previous, previous_data)
