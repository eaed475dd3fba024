"""The export pipeline: trained pieces in, a verified on-device bundle out.

    merge LoRA -> GGUF f16 -> quantize -> parity (tokens, logits, greedy) -> ONNX encoder
    -> native prompt file -> manifest with sha256 -> self-check with the runtime's reader
    -> rename into place

Everything is written into a temp directory beside the target and renamed at the end, so the
target is either the old bundle or the complete new one, never a mix. The cheap checks
(quant type, architecture, adapter fit, projector width, vocabulary) run before any heavy
step.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from bua.export.errors import ExportError
from bua.export.gguf_convert import convert_hf_to_gguf
from bua.export.hf_config import read_hf_config
from bua.export.imatrix import ImportanceMatrix
from bua.export.imatrix import from_run as imatrix_from_run
from bua.export.manifest import SERIALIZATION, soft_token_spec, write_manifest
from bua.export.merge import merge_adapter, validate_adapter
from bua.export.onnx_export import ONNX_TOL, export_encoder_onnx, load_soft_tokenizer
from bua.export.quantize import QUANT_TYPES, QuantizeReport, quantize_gguf
from bua.fsio import commit_dir, new_temp_dir, publish_mode
from bua.runtime.bundle import MANIFEST, Bundle, BundleError
from bua.runtime.native_prompt import write_native_prompt

Progress = Callable[[str], None]


def stderr_progress() -> Progress:
    start = time.monotonic()

    def say(message: str) -> None:
        print(f"[bua-export {time.monotonic() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return say


@dataclass(frozen=True)
class ExportSummary:
    bundle_dir: Path
    quant: str
    file_sizes: dict[str, int]
    gguf_sizes: dict[str, int]          # quant type -> bytes, every GGUF made (kept or not)
    quantization: QuantizeReport | None
    parity: dict[str, Any]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"bundle {self.bundle_dir} ({self.quant}), exported in {self.seconds:.0f}s"]
        for rel, size in sorted(self.file_sizes.items()):
            lines.append(f"  {rel:<28} {human_size(size):>12}")
        lines.append("GGUF size per type: " + ", ".join(f"{q} {human_size(s)}" for q, s in self.gguf_sizes.items()))
        if self.quantization is not None:
            lines.append(self.quantization.summary())
        lines.extend(describe_parity(self.parity))
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def describe_parity(parity: dict[str, Any]) -> list[str]:
    if parity.get("skipped"):
        return ["parity: skipped (--skip-parity)"]
    out = []
    tok = parity["tokenization"]
    out.append(
        f"tokenization: {tok['n_texts']} texts, {tok['n_tokens']} tokens: "
        + ("identical to the HF tokenizer" if tok["ok"] else f"{len(tok['mismatches'])} MISMATCHES")
    )
    for key in ("logits_reference", "logits_quantized"):
        if key in parity:
            p = parity[key]
            out.append(
                f"{key.replace('_', ' ')} ({p['gguf']}): max |diff| {p['max_abs_diff']:.4g} = "
                f"{p['rel_diff']:.2e} of logit scale {p['logit_scale']:.3g}, argmax agreement "
                f"{100 * p['argmax_agreement']:.1f}% over {p['n_positions']} positions"
            )
    for key in ("greedy_reference", "greedy_quantized"):
        if key in parity:
            g = parity[key]
            out.append(f"{key.replace('_', ' ')} ({g['gguf']}): {'match' if g['match'] else 'DIFFERS'}: "
                       f"HF {g['hf_text']!r} / llama.cpp {g['gguf_text']!r}")
    onnx = parity["onnx"]
    out.append(f"encoder.onnx vs PyTorch: max |diff| {onnx['max_abs_diff']:.3g} (tol {onnx['tolerance']})")
    return out


def _check_target(out_dir: Path, force: bool) -> None:
    if not out_dir.exists():
        return
    if not force:
        raise ExportError(
            f"{out_dir} already exists; pass --force to replace it (the old bundle stays in "
            "place until the new one is complete)"
        )
    if not out_dir.is_dir() or (not (out_dir / MANIFEST).is_file() and any(out_dir.iterdir())):
        raise ExportError(f"refusing to replace {out_dir}: it is not a bua bundle (no {MANIFEST})")


def _check_parity_strict(parity: dict[str, Any]) -> None:
    from bua.export.parity import F16_REL_TOL

    tok = parity["tokenization"]
    if not tok["ok"]:
        first = tok["mismatches"][0]
        raise ExportError(
            f"llama.cpp tokenizes {len(tok['mismatches'])} text(s) differently from the HF tokenizer, "
            f"e.g. {first['text']!r}: HF {first['hf'][:20]} vs llama.cpp {first['gguf'][:20]}"
        )
    ref = parity["logits_reference"]
    if ref["rel_diff"] > F16_REL_TOL:
        raise ExportError(
            f"the {ref['gguf']} GGUF's logits differ from transformers by {ref['rel_diff']:.3g} of the "
            f"logit scale (tolerance {F16_REL_TOL}): the conversion is wrong for this model"
        )


def _run_parity(hf_dir: Path, reference: Path, reference_type: str, quantized: Path | None,
                quant: str, vocab: Any, chat: Any, template: Any, n_threads: int,
                say: Progress) -> dict[str, Any]:
    from bua.export import parity as P
    from bua.export.texts import greedy_prompt, logits_texts, tokenization_texts

    say("parity: loading the merged model in transformers")
    hf = P.HFReference(hf_dir)
    try:
        chat.verify(hf.tokenizer)
    except ValueError as exc:
        raise ExportError(f"the run's chat format does not match the backbone tokenizer: {exc}") from exc
    threads = max(1, n_threads)
    ref_model = P.load_gguf(reference)
    result: dict[str, Any] = {"tolerance_rel": P.F16_REL_TOL}
    say("parity: tokenization")
    result["tokenization"] = P.as_json(P.tokenization_parity(hf, ref_model, tokenization_texts(vocab, chat, template)))
    say(f"parity: logits ({reference_type})")
    texts = logits_texts(vocab, chat, template)
    result["logits_reference"] = {"gguf": reference_type, **P.as_json(P.logits_parity(hf, ref_model, texts, threads))}
    _check_parity_strict(result)
    prompt = greedy_prompt(chat, template)
    say(f"parity: greedy answer ({reference_type})")
    greedy = P.greedy_parity(hf, ref_model, prompt, 32, threads)
    result["greedy_reference"] = {"gguf": reference_type, **P.as_json(greedy)}
    if quantized is not None:
        q_model = P.load_gguf(quantized)
        say(f"parity: logits and greedy answer ({quant})")
        result["logits_quantized"] = {"gguf": quant, **P.as_json(P.logits_parity(hf, q_model, texts[:1], threads))}
        result["greedy_quantized"] = {"gguf": quant, **P.as_json(P.greedy_parity(hf, q_model, prompt, 32, threads))}
    return result


def export_bundle(
    backbone_dir: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str] | None,
    encoder_dir: str | os.PathLike[str],
    projector_dir: str | os.PathLike[str],
    vocab: Any,
    chat_format: Any,
    dialogue_template: Any,
    out_dir: str | os.PathLike[str],
    quant: str = "q4_k_m",
    *,
    backbone_name: str | None = None,
    force: bool = False,
    keep_f16: bool = False,
    check_parity: bool = True,
    n_threads: int = 0,
    source: dict[str, Any] | None = None,
    progress: Progress | None = None,
    imatrix: ImportanceMatrix | None = None,
) -> ExportSummary:
    """Builds BUNDLE (see `bua.runtime.bundle`) from a backbone, an optional LoRA adapter, the
    encoder and projector directories and the run's vocabulary / chat format / template.

    quant: one of `QUANT_TYPES`. keep_f16 keeps the unquantized GGUF as model-f16.gguf.
    check_parity=False skips the transformers comparisons (for models too large to load
    twice); the ONNX check always runs. n_threads: llama.cpp threads (0 = all cores for
    quantization, 1 for the parity runs). imatrix: column importances for the quantizer
    (`bua.export.imatrix`; only with a quantized type). Raises ExportError for every
    user-fixable problem.
    """
    say = progress or stderr_progress()
    started = time.monotonic()
    quant = quant.lower()
    if quant not in QUANT_TYPES:
        raise ExportError(f"unknown quant type {quant!r}; valid: {', '.join(QUANT_TYPES)}")
    if imatrix is not None and quant in ("f16", "f32"):
        raise ExportError(f"an importance matrix only applies to quantized types, not {quant}")
    backbone_dir, out_dir = Path(backbone_dir), Path(out_dir).resolve()
    _check_target(out_dir, force)

    say(f"checking inputs: backbone {backbone_dir}")
    spec = read_hf_config(backbone_dir)
    if adapter_dir is not None:
        adapter = validate_adapter(backbone_dir, adapter_dir)
        say(f"adapter {adapter_dir}: LoRA r={adapter.rank} on {adapter.n_lora_modules} modules")
    encoder, projector = load_soft_tokenizer(
        Path(encoder_dir),
        Path(projector_dir),
        spec.n_embd,
        vocab,
        backbone=f"{backbone_name or spec.name} ({spec.arch})",
    )

    tmp = new_temp_dir(out_dir)
    work = new_temp_dir(out_dir.with_name(out_dir.name + ".work"))
    warnings: list[str] = []
    try:
        if adapter_dir is not None:
            say("merging the LoRA adapter into the backbone (fp32)")
            hf_dir = merge_adapter(backbone_dir, adapter_dir, work / "merged")
        else:
            hf_dir = backbone_dir
        model_file = f"model-{quant}.gguf"
        reference_type = "f32" if quant == "f32" else "f16"
        reference = (tmp if quant == reference_type or keep_f16 else work) / f"model-{reference_type}.gguf"
        say(f"converting to GGUF ({reference_type})")
        converted = convert_hf_to_gguf(hf_dir, reference, dtype=reference_type, name=backbone_name)
        gguf_sizes = {reference_type: converted.size_bytes}
        report = None
        if quant != reference_type:
            say(f"quantizing to {quant} with llama.cpp" + (f" ({imatrix.summary()})" if imatrix else ""))
            report = quantize_gguf(reference, tmp / model_file, quant, n_threads=n_threads,
                                   imatrix=imatrix.values if imatrix else None)
            gguf_sizes[quant] = report.size_bytes
            if report.fallbacks:
                warnings.append(
                    f"{len(report.fallbacks)} tensor(s) could not use {report.base_type} "
                    "(row width not a multiple of the block); see quantization.fallbacks"
                )
        if check_parity:
            parity = _run_parity(
                hf_dir,
                reference,
                reference_type,
                tmp / model_file if report else None,
                quant,
                vocab,
                chat_format,
                dialogue_template,
                n_threads,
                say,
            )
            for key in ("greedy_reference", "greedy_quantized"):
                if key in parity and not parity[key]["match"]:
                    warnings.append(f"{key.replace('_', ' ')}: llama.cpp's greedy answer differs from transformers'")
        else:
            parity = {"skipped": True}

        say("exporting encoder + projector to ONNX")
        onnx = export_encoder_onnx(encoder, projector, tmp / "encoder.onnx", spec.n_embd)
        parity["onnx"] = {"max_abs_diff": onnx.max_abs_diff, "tolerance": ONNX_TOL, "checks": onnx.checks}

        # the prediction prompt as a plain file, for C++-only apps (cpp/examples/bua_predict)
        native_prompt = write_native_prompt(tmp, model_file, chat_format, dialogue_template, vocab)
        roles = {
            "model": model_file,
            "encoder": "encoder.onnx",
            "native_prompt": native_prompt.relative_to(tmp).as_posix(),
        }
        if keep_f16 and quant != reference_type:
            roles["reference_model"] = reference.name
        say("writing the manifest (sha256 of every file)")
        write_manifest(
            tmp,
            {
                "backbone": {
                    "arch": spec.arch,
                    "n_embd": spec.n_embd,
                    "name": backbone_name or spec.name,
                    "hf_architecture": spec.hf_arch,
                    "n_layer": spec.n_layer,
                    "n_vocab": spec.vocab_size,
                    "n_ctx_train": spec.n_ctx,
                    "pre_tokenizer": converted.pre_tokenizer,
                },
                "quant": quant,
                "roles": roles,
                "vocab": vocab.to_dict(),
                "chat_format": chat_format.to_dict(),
                "dialogue_template": dialogue_template.to_dict(),
                "soft_tokens": soft_token_spec(
                    dialogue_template.marker, projector.config.to_dict(), encoder.config.max_len, spec.n_embd
                ),
                "serialization": SERIALIZATION,
                "encoder_io": onnx.io,
                "parity": parity,
                "gguf_sizes": gguf_sizes,
                "quantization": None
                if report is None
                else {
                    "base_type": report.base_type,
                    "type_counts": report.type_counts,
                    "fallbacks": [asdict(d) for d in report.fallbacks],
                    "mixture": [asdict(d) for d in report.deviations if d.reason == "mixture"],
                    "imatrix": None if imatrix is None else {
                        "dialogues": imatrix.dialogues, "tokens": imatrix.tokens, "tensors": len(imatrix.values)},
                },
                "source": {
                    **(source or {}),
                    "backbone_dir": str(backbone_dir),
                    "adapter_dir": None if adapter_dir is None else str(adapter_dir),
                    "encoder_dir": str(encoder_dir),
                    "projector_dir": str(projector_dir),
                },
                "created_by": "bua-export",
            },
        )
        try:
            bundle = Bundle.load(tmp, verify=True)
        except BundleError as exc:  # the writer and the reader disagree: a bug, not user error
            raise RuntimeError(f"the bundle just written does not load: {exc}") from exc
        sizes = {rel: entry.size for rel, entry in bundle.files.items()}
        sizes[MANIFEST] = (tmp / MANIFEST).stat().st_size
        for path in [tmp, *tmp.rglob("*")]:
            publish_mode(path)
        commit_dir(tmp, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    summary = ExportSummary(out_dir, quant, sizes, gguf_sizes, report, parity, time.monotonic() - started, warnings)
    say("done")
    return summary


def export_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    quant: str = "q4_k_m",
    *,
    stage: str | None = None,
    imatrix_dialogues: int = 0,
    **kwargs: Any,
) -> ExportSummary:
    """`export_bundle` for a curriculum run directory (read with `bua.training.checkpoint.load_run`);
    imatrix_dialogues > 0 calibrates the quantizer on that many of the run's stage-2 dialogues."""
    from bua.training.checkpoint import RunDirError, load_run

    try:
        run = load_run(run_dir, stage=stage)
    except (RunDirError, FileNotFoundError) as exc:
        raise ExportError(str(exc)) from exc
    source = {"run_dir": str(run.run_dir), "stage": run.final_stage, "backbone": run.backbone}
    imatrix = None
    if imatrix_dialogues > 0:
        say = kwargs.get("progress") or stderr_progress()
        say(f"calibrating the quantizer on {imatrix_dialogues} stage-2 dialogues of the run")
        imatrix = imatrix_from_run(run.run_dir, imatrix_dialogues, stage=run.final_stage,
                                   progress=kwargs.get("progress") is None)
    return export_bundle(
        run.backbone_dir,
        run.adapter_dir,
        run.encoder_dir,
        run.projector_dir,
        run.vocab,
        run.chat_format,
        run.dialogue_template,
        out_dir,
        quant,
        backbone_name=run.backbone,
        source=source,
        imatrix=imatrix,
        **kwargs,
    )
