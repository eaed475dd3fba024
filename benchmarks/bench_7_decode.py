"""Comparison 7: single-token decode speed vs the limit this machine's memory bandwidth sets.
Bandwidth is measured in the suite (benchkit.bandwidth); limit = read bandwidth / bytes read
per token (the GGUF's weight bytes touched by one token + the KV cache at the mean position).
Decode runs on bua._native after a short prompt; one round = `decode_tokens` tokens."""
from __future__ import annotations

import time

import pytest
from benchkit import artifacts
from benchkit.bandwidth import measure_bandwidth, token_bytes
from benchkit.kernels import describe, profile_probe, weight_type_metrics
from benchkit.recorder import finish, run_side
from benchkit.settings import Settings

pytestmark = pytest.mark.bua_compare
MODELS = [artifacts.SMOLLM2_KEY, artifacts.QWEN05_KEY, artifacts.QWEN15_KEY]
PROMPT_LEN = 32


@pytest.fixture(scope="module")
def bandwidth(bench: Settings) -> dict:
    return measure_bandwidth(bench.bandwidth_mib, bench.threads)


def _gguf_and_label(models, bench: Settings, model: str):
    if model == artifacts.QWEN15_KEY:
        return artifacts.qwen15_gguf(bench), artifacts.qwen15_label(bench)
    return models.bundle(model, "q4_k_m") / "model-q4_k_m.gguf", models.info(model).label


def _decode_loop(native, model_obj, threads: int, n_tokens: int):
    session = native.Session(model_obj, n_ctx=PROMPT_LEN + n_tokens + 8, n_threads=threads)
    ids = list(model_obj.tokenize("Mon 08:10 @home check weather\n" * 8, False, True))
    prompt = ids[:PROMPT_LEN]
    tokens = (ids * (1 + n_tokens // len(ids)))[:n_tokens]

    def setup() -> None:
        session.reset()
        session.eval_tokens(prompt)

    def fn() -> None:
        for t in tokens:
            session.eval_tokens([t])

    return setup, fn


@pytest.mark.parametrize("model", MODELS)
def test_decode(benchmark, bench, recorder, models, bandwidth, model):
    from bua.runtime.native import load_native

    native = load_native()
    gguf, label = _gguf_and_label(models, bench, model)
    model_obj = native.Model.load(str(gguf))
    n = bench.decode_tokens
    setup, fn = _decode_loop(native, model_obj, bench.threads, n)
    rec = run_side(benchmark, bench, recorder, comparison="7", model=model, model_label=label, side="decode",
                   role="point", label=f"q4_k_m decode, {n} tokens per round", fn=fn, setup=setup)
    tb = token_bytes(gguf)
    per_token = tb.per_token(PROMPT_LEN + n / 2)
    tok_s = n / rec.median_s
    limit = bandwidth["read_gbs"] * 1e9 / per_token
    rec.metrics.update(
        tokens_per_s=tok_s, bytes_per_token_mib=per_token / 2**20, weight_mib=tb.weights / 2**20,
        file_mib=tb.file_bytes / 2**20, tied_embeddings=tb.tied, read_gbs=bandwidth["read_gbs"],
        copy_gbs=bandwidth["copy_gbs"], bandwidth_array_mib=bandwidth["array_mib"],
        limit_tokens_per_s=limit, fraction_of_limit=tok_s / limit,
        effective_gbs=tok_s * per_token / 1e9, gguf=model_obj.description, n_embd=tb.n_embd,
        **weight_type_metrics(gguf),
    )
    if bench.threads > 1:  # scaling with threads tells compute-bound from bandwidth-bound
        setup1, fn1 = _decode_loop(native, model_obj, 1, n)
        times = []
        for _ in range(1 if bench.smoke else 2):
            setup1()
            t0 = time.perf_counter()
            fn1()
            times.append(time.perf_counter() - t0)
        rec.metrics["tokens_per_s_1thread"] = n / min(times)
        one = measure_bandwidth(bench.bandwidth_mib, 1)
        rec.metrics["read_gbs_1thread"] = one["read_gbs"]
    rows, why = profile_probe(["decode", "--gguf", str(gguf), "--threads", str(bench.threads),
                               "--tokens", str(max(16, n))])
    rec.metrics["kernels"] = describe(rows) if rows else f"no profile: {why}"
    rec.metrics["kernel_shares"] = {name: pct for name, pct in rows}
    finish(benchmark, rec)
