"""`bua-export`: a curriculum run directory -> an on-device bundle.

    bua-export --checkpoint RUN_DIR --quant q4_k_m --out BUNDLE_DIR [--force] [--keep-f16]

Progress goes to stderr, the final summary (file sizes per quant type, tensor types and
fallbacks, parity numbers) to stdout. Problems the user can fix exit with status 2 and one
clear message, without a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from bua.export import QUANT_NAMES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bua-export",
        description="Merge a trained BUA run's LoRA into its LLM, convert it to a quantized GGUF for "
        "llama.cpp, export the behavior encoder + projector to ONNX, and write a verified bundle.",
    )
    p.add_argument(
        "--checkpoint", required=True, metavar="RUN_DIR", help="training run directory (training/curriculum.py --out)"
    )
    p.add_argument("--out", required=True, metavar="BUNDLE_DIR", help="bundle directory to write")
    p.add_argument("--quant", default="q4_k_m", help=f"GGUF type: {', '.join(QUANT_NAMES)} (default q4_k_m)")
    p.add_argument("--stage", default=None, help="export this finished stage instead of the final one (stage1/2/3)")
    p.add_argument(
        "--force", action="store_true", help="replace an existing bundle (kept until the new one is complete)"
    )
    p.add_argument("--keep-f16", action="store_true", help="also keep the unquantized f16 GGUF in the bundle")
    p.add_argument(
        "--imatrix",
        type=int,
        default=0,
        metavar="N",
        help="calibrate the quantizer on N of the run's stage-2 dialogues (llama.cpp importance matrix; 0 = off)",
    )
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads for quantization (0 = all cores)")
    p.add_argument(
        "--skip-parity",
        action="store_true",
        help="skip the transformers-vs-llama.cpp checks (models too large to load twice)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from bua.export.errors import ExportError
        from bua.export.pipeline import export_run
    except ModuleNotFoundError as exc:
        print(
            f"bua-export: error: {exc.name} is not installed; the exporter needs bua's train and export "
            "extras: pip install 'bua[train,export]'",
            file=sys.stderr,
        )
        return 2

    try:
        summary = export_run(
            args.checkpoint,
            args.out,
            args.quant,
            stage=args.stage,
            imatrix_dialogues=args.imatrix,
            force=args.force,
            keep_f16=args.keep_f16,
            check_parity=not args.skip_parity,
            n_threads=args.threads,
        )
    except ExportError as exc:
        print(f"bua-export: error: {exc}", file=sys.stderr)
        return 2
    print(summary.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
