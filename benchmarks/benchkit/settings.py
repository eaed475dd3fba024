"""Run settings: full or smoke mode, the thread count, where built models are cached.

Threads: explicit (`--bench-threads` / $BUA_BENCH_THREADS) or min(2, free cores). ggml's
worker threads spin-wait, so a benchmark must never use more threads than there are cores not
already busy; free cores = usable cores - the 1-minute load average (rounded), at least 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_SMOKE = "BUA_BENCH_SMOKE"
ENV_THREADS = "BUA_BENCH_THREADS"
ENV_CACHE = "BUA_BENCH_CACHE"
ENV_TRAINED = "BUA_BENCH_TRAINED_BUNDLE"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def free_cores() -> int:
    """Usable cores not already busy (1-minute load average), at least 1."""
    return max(1, usable_cores() - int(os.getloadavg()[0] + 0.5))


def default_threads() -> int:
    return min(2, free_cores())


def resolve_threads(explicit: int | str | None) -> int:
    """The thread count to benchmark with; refuses more threads than usable cores."""
    if explicit in (None, ""):
        env = os.environ.get(ENV_THREADS, "")
        explicit = env or None
    if explicit is None:
        return default_threads()
    try:
        n = int(explicit)
    except ValueError as exc:
        raise ValueError(f"thread count must be an integer, got {explicit!r}") from exc
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    if n > usable_cores():
        raise ValueError(f"{n} threads requested but this process may use only {usable_cores()} "
                         "core(s); ggml spin-waits, so more threads than cores ruins every timing")
    return n


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def default_cache(smoke: bool) -> Path:
    if os.environ.get(ENV_CACHE):
        root = Path(os.environ[ENV_CACHE])
    else:
        from bua.backbones import cache_dir

        root = cache_dir() / "bench"
    return root / ("smoke" if smoke else "full")


@dataclass(frozen=True)
class Settings:
    """What a run measures and how long it spends on each side of a comparison."""

    smoke: bool
    threads: int
    cache: Path
    seconds_per_side: float          # timing budget per side (rounds = budget / one call)
    min_rounds: int
    max_rounds: int
    n_histories: int                 # histories cycled through by the latency benchmarks
    n_agreement: int                 # histories for top-1 agreement (comparison 5)
    decode_tokens: int               # tokens decoded per round (comparison 7)
    bandwidth_mib: int               # array size of the bandwidth measurement
    rss_predictions: int             # predictions run by each peak-RSS probe
    quants: tuple[str, ...] = ("f16", "q8_0", "q5_k_m", "q4_k_m")
    load_at_start: tuple[float, float, float] = field(default_factory=lambda: os.getloadavg())
    trained_bundle: Path | None = None  # a trained SmolLM2 bundle (e.g. the demo's), measured where a suite asks for it

    def rounds_for(self, one_call_s: float) -> int:
        """Rounds that fit the per-side budget given one call's duration (at least
        `min_rounds`, or 2 for calls taking half the budget or more)."""
        if self.smoke:
            return 1
        if one_call_s >= self.seconds_per_side / 2:
            return 2  # slow calls (seconds each) vary little relative to their length
        fit = int(self.seconds_per_side / max(one_call_s, 1e-6))
        return max(self.min_rounds, min(self.max_rounds, fit))


def make_settings(smoke: bool, threads: int | str | None = None, cache: str | os.PathLike | None = None,
                  budget_s: float | str | None = None, trained_bundle: str | os.PathLike | None = None) -> Settings:
    """Settings of a run; budget_s overrides the full run's timing budget per side."""
    n = resolve_threads(threads)
    trained = trained_bundle or os.environ.get(ENV_TRAINED) or None
    if trained is not None and not (Path(trained) / "manifest.json").is_file():
        raise ValueError(f"trained bundle {trained}: no manifest.json there (pass a directory bua-export wrote)")
    trained = Path(trained) if trained else None
    root = Path(cache) / ("smoke" if smoke else "full") if cache else default_cache(smoke)
    if smoke:
        return Settings(smoke=True, threads=n, cache=root, seconds_per_side=0.0, min_rounds=1,
                        max_rounds=1, n_histories=2, n_agreement=3, decode_tokens=4,
                        bandwidth_mib=32, rss_predictions=1, trained_bundle=trained)
    budget = 12.0 if budget_s in (None, "") else float(budget_s)
    if budget <= 0:
        raise ValueError(f"the timing budget per side must be positive, got {budget}")
    return Settings(smoke=False, threads=n, cache=root, seconds_per_side=budget, min_rounds=3,
                    max_rounds=25, n_histories=8, n_agreement=24, decode_tokens=48,
                    bandwidth_mib=1024, rss_predictions=3, trained_bundle=trained)
