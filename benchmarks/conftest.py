"""pytest configuration of the on-device BUA benchmark suites.

    pytest benchmarks                         # full suites (minutes; models built on first use)
    pytest benchmarks --bench-smoke --benchmark-disable   # tiny models, 1 round: seconds
    python benchmarks/report.py               # full run -> benchmarks/README.md + results.png

Options: --bench-smoke (or BUA_BENCH_SMOKE=1), --bench-threads N (or BUA_BENCH_THREADS;
default min(2, free cores)), --bench-cache DIR (or BUA_BENCH_CACHE; default
<bua cache>/bench), --bench-budget SECONDS (timing per side in a full run),
--bench-trained-bundle DIR (or BUA_BENCH_TRAINED_BUNDLE: a trained SmolLM2 bundle such as
`bua demo`'s, which comparison 8 measures next to the untrained ones). Files named
bench_*.py are collected here (the default `pytest` run, testpaths = tests, never sees them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# numpy's own BLAS is in no measured path; its idle worker threads would only spin on the cores
# being measured. (report.py sets it for its subprocesses too.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import artifacts  # noqa: E402
from benchkit.goals import evaluate  # noqa: E402
from benchkit.recorder import Recorder  # noqa: E402
from benchkit.settings import ENV_SMOKE, Settings, env_flag, make_settings  # noqa: E402

MARKER = "bua_compare"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bua benchmarks")
    group.addoption(
        "--bench-smoke", action="store_true", default=False, help="tiny models, one round per side (what CI runs)"
    )
    group.addoption(
        "--bench-threads",
        default=None,
        help="threads for llama.cpp, onnxruntime and torch (default min(2, free cores))",
    )
    group.addoption("--bench-cache", default=None, help="where built models are cached")
    group.addoption(
        "--bench-budget", default=None, help="seconds of timing per side in a full run (default 12; at least 3 rounds)"
    )
    group.addoption("--bench-trained-bundle", default=None,
                    help="a trained SmolLM2 bundle (e.g. runs/demo/<run>/bundle-q8_0) for comparison 8")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: one side of an on-device BUA comparison")


def pytest_collect_file(file_path: Path, parent):
    # A bench_*.py named on the command line is collected by pytest itself already.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _smoke(config: pytest.Config) -> bool:
    return bool(config.getoption("--bench-smoke")) or env_flag(ENV_SMOKE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _smoke(config):
        return
    # Smoke mode runs the comparisons only (bench_data.py's 100k-sample build takes a minute).
    keep = [i for i in items if i.get_closest_marker(MARKER)]
    dropped = [i for i in items if not i.get_closest_marker(MARKER)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config) -> Settings:
    return make_settings(
        _smoke(pytestconfig),
        pytestconfig.getoption("--bench-threads"),
        pytestconfig.getoption("--bench-cache"),
        pytestconfig.getoption("--bench-budget"),
        pytestconfig.getoption("--bench-trained-bundle"),
    )


@pytest.fixture(scope="session")
def recorder(pytestconfig: pytest.Config) -> Recorder:
    rec = Recorder()
    pytestconfig.stash[_RECORDER] = rec
    return rec


_RECORDER = pytest.StashKey[Recorder]()


class Models:
    """Bundles, predictors and model descriptions, built or loaded once per session."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._predictors: dict[tuple[str, str], object] = {}

    def info(self, model: str) -> artifacts.ModelInfo:
        if model == artifacts.SMOLLM2_KEY:
            return artifacts.smollm2(self.s)
        if model == artifacts.QWEN05_KEY:
            return artifacts.qwen05(self.s)
        if model == artifacts.TRAINED_KEY:
            return artifacts.trained(self.s)
        raise KeyError(f"no bundle for model {model!r}")

    def bundle(self, model: str, quant: str = "q4_k_m") -> Path:
        if model == artifacts.SMOLLM2_KEY:
            return artifacts.smollm2_bundle(self.s, quant)
        if model == artifacts.QWEN05_KEY:
            return artifacts.qwen05_bundle(self.s, quant)
        if model == artifacts.TRAINED_KEY:
            return artifacts.trained_bundle(self.s)  # as exported, whatever `quant`
        raise KeyError(f"no bundle for model {model!r}")

    def predictor(self, model: str, quant: str = "q4_k_m", score_tolerance: float | None = None):
        """A predictor on the model's bundle (one per model, quant and scoring tolerance;
        None = OnDevicePredictor's default)."""
        key = (model, quant, score_tolerance)
        if key not in self._predictors:
            from bua import OnDevicePredictor

            extra = {} if score_tolerance is None else {"score_tolerance": score_tolerance}
            self._predictors[key] = OnDevicePredictor.from_bundle(self.bundle(model, quant), n_threads=self.s.threads,
                                                                  **extra)
        return self._predictors[key]


@pytest.fixture(scope="session")
def models(bench: Settings) -> Models:
    return Models(bench)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rec = config.stash.get(_RECORDER, None)
    if rec is None or not rec.records:
        return
    tr = terminalreporter
    threads = sorted({r.metrics.get("threads") for r in rec.records})
    tr.section(f"on-device BUA comparisons: ratios (threads {threads})")
    for o in evaluate(rec.records):
        tr.write_line(f"[{o.comparison}] {o.model:<20} {o.ratio.name:<50} {o.ratio.fmt(o.value):>9}  {o.verdict()}")
