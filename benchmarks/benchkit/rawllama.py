"""Comparison 6's baseline: llama-cpp-python's own low-level (ctypes) path, driven the way a
careful user would drive it: one llama_batch allocated up front, its arrays filled through
numpy views, llama_decode, the last logits copied out. Same libllama, same GGUF, same context
parameters as `bua._native`'s Session (n_ctx, n_batch = n_ubatch, n_seq_max, unified KV,
threads), so both sides issue identical llama_decode calls.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np


class RawSession:
    def __init__(self, gguf: Path, n_ctx: int, n_threads: int, n_batch: int = 512, n_seq_max: int = 64) -> None:
        import llama_cpp as L
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # importing llama_cpp routes llama.cpp's log through Python; keep it quiet
        self.L = L
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(str(gguf).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama-cpp-python could not load {gguf}")
        n_batch = min(n_batch, n_ctx)
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = min(n_seq_max, n_batch)
        cp.kv_unified = True
        cp.n_threads = n_threads
        cp.n_threads_batch = n_threads
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama-cpp-python could not create a context")
        self.n_batch = n_batch
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.n_embd = L.llama_model_n_embd_inp(self.model)
        self.n_past = 0
        self.logits = np.empty(self.n_vocab, dtype=np.float32)
        self._tok = self._make_batch(embd=0)
        self._emb = self._make_batch(embd=self.n_embd)

    def _make_batch(self, embd: int) -> dict:
        L, n = self.L, self.n_batch
        batch = L.llama_batch_init(n, embd, 1)
        for i in range(n):
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
        views = {
            "batch": batch,
            "pos": np.ctypeslib.as_array(batch.pos, shape=(n,)),
            "logits": np.ctypeslib.as_array(ctypes.cast(batch.logits, ctypes.POINTER(ctypes.c_int8)), shape=(n,)),
        }
        if embd:
            views["embd"] = np.ctypeslib.as_array(batch.embd, shape=(n, embd))
        else:
            views["token"] = np.ctypeslib.as_array(batch.token, shape=(n,))
        return views

    def close(self) -> None:
        L = self.L
        for b in (self._tok, self._emb):
            L.llama_batch_free(b["batch"])
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)

    def reset(self) -> None:
        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)
        self.n_past = 0

    def _decode(self, views: dict, key: str, data: np.ndarray) -> None:
        L = self.L
        n = len(data)
        for off in range(0, n, self.n_batch):
            m = min(self.n_batch, n - off)
            views[key][:m] = data[off:off + m]
            views["pos"][:m] = np.arange(self.n_past, self.n_past + m, dtype=np.int32)
            views["logits"][:m] = 0
            views["logits"][m - 1] = 1 if off + m == n else 0
            views["batch"].n_tokens = m
            status = L.llama_decode(self.ctx, views["batch"])
            if status != 0:
                raise RuntimeError(f"llama_decode failed with status {status}")
            self.n_past += m
        ptr = L.llama_get_logits_ith(self.ctx, -1)
        self.logits[:] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def eval_tokens(self, tokens) -> None:
        self._decode(self._tok, "token", np.asarray(tokens, dtype=np.int32))

    def eval_embeddings(self, rows: np.ndarray) -> None:
        if rows.shape[1] != self.n_embd:
            raise ValueError(f"rows are {rows.shape[1]} wide, the model's n_embd is {self.n_embd}")
        self._decode(self._emb, "embd", np.ascontiguousarray(rows, dtype=np.float32))
