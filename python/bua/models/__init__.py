"""Torch models: behavior encoder, projector, baselines (import torch on first use).

- ``bua.models.encoder``: ``EncoderConfig``, ``BehaviorEncoder``
- ``bua.models.pretrain``: ``pretrain_encoder``, ``PretrainConfig``
- ``bua.models.projector``: ``ProjectorConfig``, ``Projector``, ``SoftTokenizer``
- ``bua.models.onnx_io``: ``export_soft_token_onnx``, ``onnx_parity``
- ``bua.models.baselines``: SASRec, the fine-tuned encoder ("behaveGPT"), most-frequent, Markov
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "EncoderConfig": "encoder",
    "BehaviorEncoder": "encoder",
    "PretrainConfig": "pretrain",
    "PretrainReport": "pretrain",
    "pretrain_encoder": "pretrain",
    "ProjectorConfig": "projector",
    "Projector": "projector",
    "SoftTokenizer": "projector",
    "export_soft_token_onnx": "onnx_io",
    "onnx_parity": "onnx_io",
    "MostFrequent": "baselines",
    "Markov": "baselines",
    "SASRec": "baselines",
    "SASRecConfig": "baselines",
    "EncoderClassifier": "baselines",
    "EncoderClassifierConfig": "baselines",
    "prediction_arrays": "baselines",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"bua.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'bua.models' has no attribute {name!r}")
