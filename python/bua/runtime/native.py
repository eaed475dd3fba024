"""Loads the compiled extension `bua._native`, with errors that say what to reinstall or rebuild."""
from __future__ import annotations

from types import ModuleType

LLAMA_CPP_PYTHON_VERSION = "0.3.36"


def load_native() -> ModuleType:
    """Returns the `bua._native` module or raises ImportError explaining the fix."""
    try:
        from bua import _native
    except ModuleNotFoundError as exc:
        raise ImportError(
            "bua's compiled extension bua._native is not installed (a source checkout that was "
            "never built?). Install bua from the repository root with `pip install -e .` (or "
            "`pip install .`): it compiles the extension against "
            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}."
        ) from exc
    except ImportError as exc:
        if "llama-cpp-python" in str(exc):  # the extension's own version check
            raise
        raise ImportError(
            f"bua._native is installed but cannot load: {exc}. It links libllama from the "
            "llama-cpp-python package; reinstall that "
            f"(`pip install --force-reinstall llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}`), "
            "then reinstall bua (`pip install --force-reinstall --no-deps .`)."
        ) from exc
    return _native


class LlamaBuildError(RuntimeError):
    """The installed llama.cpp was compiled for instructions this CPU cannot run (or with AMX)."""


def check_llama_build(native: ModuleType) -> None:
    """Raises LlamaBuildError unless the loaded llama.cpp is safe on this CPU.

    A build that uses an instruction set the CPU lacks, or ggml's AMX backend, would otherwise
    die with SIGILL in the middle of a prediction.
    """
    problems = native.build_problems()
    if problems:
        info = native.build_info()["system_info"]
        raise LlamaBuildError(
            "the installed llama.cpp (llama-cpp-python) cannot run on this CPU:\n  "
            + "\n  ".join(problems)
            + f"\nits system info: {info.strip()}\n"
            "Rebuild it for this CPU from the bua checkout: `python scripts/llama_build.py ensure` "
            "(or `bash scripts/setup.sh`), which compiles llama.cpp with this CPU's instruction "
            "sets and without AMX, then reinstall bua (`pip install --no-build-isolation -e .`)."
        )
