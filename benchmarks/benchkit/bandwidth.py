"""Comparison 7's ceiling: memory read bandwidth measured here, and the bytes one decoded
token must read.

Bandwidth method: a float32 array far larger than the last-level cache, split into one slice
per thread; each thread runs a streaming reduction over its slice (numpy `max` and
`bitwise_or.reduce`: SIMD loops that release the GIL and do almost no arithmetic per byte).
Read bandwidth = array bytes / wall time of the slowest thread, best of `repeats`, best kernel.
A numpy copy is measured too (bytes copied per second; it reads and writes each byte).

Bytes per token: every weight tensor in the GGUF is read once per decoded token (matrix-vector
products), except the token-embedding matrix, of which one row is read, unless the model ties
it to the output layer (then all of it is read for the logits). Plus the KV cache read by
attention: 2 (K, V) x layers x KV heads x head dim x f16 bytes per cached position, at the
mean position of the decode window.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _kernels():
    return {
        "max_f32": lambda a, out: a.max(),
        "or_u64": lambda a, out: np.bitwise_or.reduce(a.view(np.uint64)),
        "copy": lambda a, out: np.copyto(out, a),
    }


def measure_bandwidth(mib: int, threads: int, repeats: int = 5) -> dict[str, float]:
    """GB/s per kernel and the best read kernel ('read_gbs'), with `threads` threads."""
    n = (mib * 2**20 // 4) // (2 * threads) * (2 * threads)
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    src.view(np.uint8)[::4096] = 1  # touch every page before timing
    dst.view(np.uint8)[::4096] = 0
    slices = [slice(i * n // threads, (i + 1) * n // threads) for i in range(threads)]
    out: dict[str, float] = {}
    with ThreadPoolExecutor(threads) as pool:
        for name, kernel in _kernels().items():
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                list(pool.map(lambda s: kernel(src[s], dst[s]), slices))
                best = min(best, time.perf_counter() - t0)
            out[f"{name}_gbs"] = src.nbytes / best / 1e9
    out["read_gbs"] = max(out["max_f32_gbs"], out["or_u64_gbs"])
    out["array_mib"] = src.nbytes / 2**20
    out["threads"] = threads
    return out


@dataclass(frozen=True)
class TokenBytes:
    weights: int          # weight bytes read per token
    kv_per_position: int  # KV-cache bytes read per cached position
    tied: bool
    n_layer: int
    n_embd: int
    file_bytes: int

    def per_token(self, mean_position: float) -> float:
        return self.weights + self.kv_per_position * mean_position


def token_bytes(gguf_path: Path) -> TokenBytes:
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")

    def meta(key: str) -> int:
        field = reader.fields[f"{arch}.{key}"]
        return int(field.parts[-1][0])

    tensors = {t.name: int(t.n_bytes) for t in reader.tensors}
    shapes = {t.name: [int(x) for x in t.shape] for t in reader.tensors}
    tied = "output.weight" not in tensors
    weights = sum(tensors.values())
    if not tied:
        n_vocab = shapes["token_embd.weight"][-1]
        weights -= tensors["token_embd.weight"] - tensors["token_embd.weight"] // n_vocab
    n_layer = meta("block_count")
    n_head = meta("attention.head_count")
    n_kv = meta("attention.head_count_kv")
    n_embd = meta("embedding_length")
    kv = 2 * n_layer * n_kv * (n_embd // n_head) * 2  # K and V, f16
    return TokenBytes(weights, kv, tied, n_layer, n_embd, Path(gguf_path).stat().st_size)
