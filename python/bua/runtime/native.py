"""Loads the compiled extension `bua._native` with an error that says what to reinstall."""
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
