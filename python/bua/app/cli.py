"""The ``bua`` console script: a dispatcher over subcommands (demo, eval, predict, generate, info).

Each subcommand is a ``register(subparsers)`` function in ``COMMANDS`` that adds its parser and
sets ``func`` (called with the parsed args, returns the exit code). Heavy imports happen inside
the ``func``s, so ``bua --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="train the baselines on a dataset and print a Table-1-style report",
        description="Train most-frequent, Markov, SASRec and the fine-tuned behavior encoder "
                    "(behaveGPT row) on an 8:1:1 user split and report Rec_w, Prec_w, Overall, "
                    "Head, Medium, Tail on the natural and long-tail test sets.")
    p.add_argument("--data", default="simulator",
                   help="'simulator', 'foursquare' (../shared/data/foursquare_nyc) or a "
                        "CSV/Parquet path (default: simulator)")
    p.add_argument("--column", action="append", default=[], metavar="FIELD=NAME",
                   help="column of a CSV/Parquet table, e.g. --column user=uid --column "
                        "timestamp=time (fields of bua.loaders.TableColumns)")
    p.add_argument("--out", help="directory for report.md and report.json")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="subset of: most-frequent markov SASRec behaveGPT")
    p.add_argument("--quick", action="store_true",
                   help="seconds-scale smoke run (tiny encoder, few users, one epoch)")
    p.add_argument("--encoder-size", choices=("tiny", "default", "large"))
    p.add_argument("--encoder", metavar="DIR",
                   help="fine-tune this saved encoder (encoder.safetensors + encoder.json) for "
                        "the behaveGPT row instead of pretraining one")
    p.add_argument("--history-len", type=int)
    p.add_argument("--sim-users", type=int, help="simulated users (default 300)")
    p.add_argument("--sim-days", type=int, help="simulated days (default 28)")
    p.add_argument("--long-tail-per-class", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--pretrain-epochs", type=int, help="encoder pretraining epochs (default 10)")
    p.add_argument("--sasrec-epochs", type=int,
                   help="SASRec max epochs (default 15; App. G uses 200 with patience 5)")
    p.add_argument("--finetune-epochs", type=int, help="behaveGPT fine-tuning epochs (default 4)")
    p.add_argument("--time-budget", type=float, metavar="S",
                   help="also stop each neural training phase after S seconds (keeping the best "
                        "epoch so far; makes results depend on machine speed)")
    p.add_argument("--threads", type=int,
                   help="torch intra-op threads (default: torch's choice; 1 is fastest for "
                        "these small models on a busy machine)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from bua.loaders import parse_column_options
    from bua.models.baseline_eval import BaselineEvalConfig, run_eval

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    columns = parse_column_options(args.column)
    overrides = {
        k: v
        for k, v in {
            "columns": columns or None,
            "data": args.data,
            "encoder_dir": args.encoder,
            "encoder_size": args.encoder_size,
            "history_len": args.history_len,
            "sim_users": args.sim_users,
            "sim_days": args.sim_days,
            "seed": args.seed,
            "long_tail_per_class": args.long_tail_per_class,
            "pretrain_max_epochs": args.pretrain_epochs,
            "sasrec_max_epochs": args.sasrec_epochs,
            "finetune_max_epochs": args.finetune_epochs,
            "models": tuple(args.models) if args.models else None,
        }.items()
        if v is not None
    }
    if args.time_budget is not None:
        overrides.update(
            pretrain_time_budget_s=args.time_budget,
            sasrec_time_budget_s=args.time_budget,
            finetune_time_budget_s=args.time_budget,
        )
    overrides["progress"] = not args.no_progress
    config = BaselineEvalConfig.quick(**overrides) if args.quick else BaselineEvalConfig(**overrides)
    report = run_eval(config, out_dir=args.out)
    print(report.to_markdown())
    if args.out:
        print(f"wrote {args.out}/report.md and {args.out}/report.json")
    return 0


def _register_demo(sub: argparse._SubParsersAction) -> None:
    from bua.app.demo import register

    register(sub)


def _register_shell(sub: argparse._SubParsersAction) -> None:
    from bua.app.shell import register

    register(sub)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_register_demo, _register_eval, _register_shell]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bua", description="Behavior Understanding Alignment")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:  # bad input, bundle, build
        print(f"bua {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
