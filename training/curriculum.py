"""Trains BUA end to end: `python training/curriculum.py --config training/configs/NAME.yaml --out RUN_DIR`.

Single process on CPU or one GPU; the same command under `torchrun --nproc_per_node N` runs N
data-parallel replicas. See training/README.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parse_set(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. --set stage2.loss=token")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="curriculum.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="YAML config (training/configs/*.yaml)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<config name>)")
    p.add_argument("--stages", default=None,
                   help="comma-separated stages to run, in order, e.g. 2,3 (default: those the config enables)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--init-from", type=Path, default=None,
                   help="take the encoder and finished earlier stages from this run (see --init-stages)")
    p.add_argument(
        "--init-stages",
        default=None,
        help="with --init-from: which stages to take, e.g. 1 (default: those finished before the first of --stages)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted key, YAML value); repeatable")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation report after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file "Loading weights" bars; ours are per stage
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    from bua.training.checkpoint import RunDirError
    from bua.training.config import ConfigError
    from bua.training.pipeline import RunOptions, parse_stages, run_curriculum

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / args.config.stem
    try:
        opts = RunOptions(
            config=args.config,
            out=out,
            stages=parse_stages(args.stages) if args.stages else None,
            resume=args.resume,
            overrides=_parse_set(args.set),
            device=args.device,
            evaluate=False if args.no_eval else None,
            progress=not args.no_progress,
            init_from=args.init_from,
            init_stages=parse_stages(args.init_stages) if args.init_stages else None,
        )
        run_curriculum(opts)
    except (ConfigError, RunDirError, ValueError, FileNotFoundError) as err:
        print(f"curriculum.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
