"""bua: Behavior Understanding Alignment, from GPU curriculum training to on-device prediction.

The data layer (events, vocabularies, simulator, samples, dialogues) and the runtime import
without torch. Heavy parts load on first use: `from bua import OnDevicePredictor` pulls in only
numpy, onnxruntime and the native llama.cpp extension.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["OnDevicePredictor", "__version__"]


def __getattr__(name: str):
    if name == "OnDevicePredictor":
        from bua.runtime.predictor import OnDevicePredictor

        return OnDevicePredictor
    raise AttributeError(f"module 'bua' has no attribute {name!r}")
