"""ONNX export of encoder + projector as one graph (the bundle's ``encoder.onnx``).

Inputs: ``events`` int64 ``[batch, length, 4]`` (day, minute, location, behavior) and ``mask``
bool ``[batch, length]``; outputs ``soft_tokens`` float32 ``[batch, n_soft, out_dim]`` and
``soft_mask`` bool ``[batch, n_soft]``. Batch and length are dynamic (n_soft = length in the
per-event and item-emb modes, n_pooled_tokens in the pooled mode).
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from bua.fsio import write_bytes
from bua.models.encoder import BehaviorEncoder
from bua.models.projector import Projector, SoftTokenizer

INPUT_NAMES = ("events", "mask")
OUTPUT_NAMES = ("soft_tokens", "soft_mask")
DEFAULT_OPSET = 18


def example_inputs(encoder: BehaviorEncoder, batch: int = 2, length: int = 5,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random valid (events, mask) for the encoder's vocabularies; row 1 is right-padded."""
    c = encoder.config
    g = torch.Generator().manual_seed(seed)
    length = min(length, c.max_len)
    events = torch.stack([
        torch.randint(0, 7, (batch, length), generator=g),
        torch.randint(0, 1440, (batch, length), generator=g),
        torch.randint(0, c.n_locations, (batch, length), generator=g),
        torch.randint(0, c.n_behaviors, (batch, length), generator=g),
    ], dim=-1)
    mask = torch.ones(batch, length, dtype=torch.bool)
    if batch > 1 and length > 1:
        mask[1, length // 2 + 1:] = False
    return events, mask


def export_soft_token_onnx(encoder: BehaviorEncoder, projector: Projector,
                           path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``SoftTokenizer(encoder, projector)`` (eval mode, on CPU copies, so the caller's
    modules are untouched) to ``path`` as a single self-contained ONNX file, atomically."""
    path = Path(path)
    model = SoftTokenizer(copy.deepcopy(encoder).cpu(), copy.deepcopy(projector).cpu()).eval()
    events, mask = example_inputs(model.encoder, batch=2, length=min(8, encoder.config.max_len))
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", max=encoder.config.max_len)
    with warnings.catch_warnings():
        # torch's exporter notes that the two inputs share the batch/length axes: expected
        warnings.filterwarnings("ignore", message=r".*axis name.*will not be used")
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec.*")
        program = torch.onnx.export(
            model, (events, mask), None,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"events": {0: batch, 1: length}, "mask": {0: batch, 1: length}},
            opset_version=opset, dynamo=True, external_data=False, verbose=False,
        )
    program.optimize()
    write_bytes(path, program.model_proto.SerializeToString())
    return path


def onnx_parity(encoder: BehaviorEncoder, projector: Projector, path: str | os.PathLike,
                events: torch.Tensor, mask: torch.Tensor) -> float:
    """Max |torch - onnxruntime| over the real soft tokens of ``(events, mask)``; also checks
    that ``soft_mask`` agrees exactly (raises otherwise)."""
    import onnxruntime as ort

    model = SoftTokenizer(copy.deepcopy(encoder).cpu(), copy.deepcopy(projector).cpu()).eval()
    with torch.no_grad():
        ref_tokens, ref_mask = model(events, mask)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokens, soft_mask = sess.run(list(OUTPUT_NAMES),
                                 {"events": events.numpy(), "mask": mask.numpy()})
    if not np.array_equal(soft_mask, ref_mask.numpy()):
        raise AssertionError("onnxruntime soft_mask differs from torch")
    valid = ref_mask.numpy()
    return float(np.abs(tokens[valid] - ref_tokens.numpy()[valid]).max()) if valid.any() else 0.0
