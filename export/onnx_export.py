"""The behavior encoder + projector as the bundle's encoder.onnx, checked against PyTorch.

The graph itself comes from `bua.models.onnx_io.export_soft_token_onnx` (the encoder
engineer's `SoftTokenizer` export). Here: the checks that tie it to the LLM and the vocabulary
before anything heavy runs, and an onnxruntime-vs-PyTorch comparison on random histories of
several batch sizes and lengths (dynamic axes), fp32 max abs diff <= ONNX_TOL.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bua.export.errors import ExportError

ONNX_TOL = 1e-4
EXPECTED_INPUTS = ("events", "mask")
EXPECTED_OUTPUTS = ("soft_tokens", "soft_mask")


@dataclass(frozen=True)
class OnnxResult:
    path: Path
    max_abs_diff: float
    checks: list[dict[str, Any]] = field(default_factory=list)  # batch, length, max_abs_diff
    io: dict[str, Any] = field(default_factory=dict)


def load_soft_tokenizer(encoder_dir: Path, projector_dir: Path, n_embd: int, vocab: Any, backbone: str = "the LLM"):
    """Loads encoder and projector and checks them against the LLM width and the vocabulary.

    Returns (encoder, projector). Raises ExportError naming both numbers on any mismatch.
    """
    from bua.models.encoder import BehaviorEncoder
    from bua.models.projector import Projector

    try:
        encoder = BehaviorEncoder.load(encoder_dir)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise ExportError(f"cannot load the behavior encoder from {encoder_dir}: {exc}") from exc
    try:
        projector = Projector.load(projector_dir)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise ExportError(f"cannot load the projector from {projector_dir}: {exc}") from exc
    out_dim = projector.config.out_dim
    if out_dim != n_embd:
        raise ExportError(
            f"projector output width {out_dim} != LLM hidden size {n_embd} of {backbone}: the "
            f"projector in {projector_dir} was trained for another backbone"
        )
    if projector.config.in_dim != encoder.config.d_model:
        raise ExportError(
            f"projector input width {projector.config.in_dim} != encoder width "
            f"{encoder.config.d_model} ({projector_dir} vs {encoder_dir})"
        )
    try:
        encoder.config.check_vocab(vocab.n_behaviors, vocab.n_locations, source="the vocabulary")
    except ValueError as exc:
        raise ExportError(f"{encoder_dir}: {exc}") from exc
    return encoder, projector


def _io_spec(path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def describe(args) -> dict[str, Any]:
        return {a.name: {"type": a.type, "shape": [d if isinstance(d, int) else str(d) for d in a.shape]} for a in args}

    inputs, outputs = describe(session.get_inputs()), describe(session.get_outputs())
    if tuple(inputs) != EXPECTED_INPUTS or tuple(outputs) != EXPECTED_OUTPUTS:
        raise ExportError(
            f"{path}: ONNX inputs {list(inputs)} / outputs {list(outputs)}, expected "
            f"{list(EXPECTED_INPUTS)} / {list(EXPECTED_OUTPUTS)}"
        )
    inputs["events"]["columns"] = ["day", "minute", "location", "behavior"]
    inputs["mask"]["meaning"] = "true = real event"
    outputs["soft_mask"]["meaning"] = "true = soft token to feed the LLM"
    return {"inputs": inputs, "outputs": outputs}


def export_encoder_onnx(encoder, projector, path: Path, n_embd: int) -> OnnxResult:
    """Writes encoder.onnx and compares it with PyTorch on random histories."""
    from bua.models.onnx_io import example_inputs, export_soft_token_onnx, onnx_parity

    export_soft_token_onnx(encoder, projector, path)
    max_len = encoder.config.max_len
    checks: list[dict[str, Any]] = []
    for seed, (batch, length) in enumerate(((1, 1), (3, min(7, max_len)), (2, max_len))):
        events, mask = example_inputs(encoder, batch=batch, length=length, seed=seed)
        diff = onnx_parity(encoder, projector, path, events, mask)
        checks.append({"batch": batch, "length": length, "max_abs_diff": diff})
    worst = max(c["max_abs_diff"] for c in checks)
    if worst > ONNX_TOL:
        raise ExportError(f"encoder.onnx differs from PyTorch by {worst:.3g} (> {ONNX_TOL}): {checks}")
    io = _io_spec(path)
    width = io["outputs"]["soft_tokens"]["shape"][-1]
    if width != n_embd:
        raise ExportError(f"encoder.onnx emits soft tokens of width {width}, the LLM needs {n_embd}")
    return OnnxResult(path, worst, checks, io)
