"""`bua predict`, `bua generate`, `bua info`: an exported bundle used from the shell.

A history comes from a CSV/TSV/Parquet log (the columns of `bua eval`, `--column FIELD=NAME`),
or from event text lines (`Mon 08:10 @home check weather`), or `-` for stdin; the most recent
`max_history` events of the chosen user go to `OnDevicePredictor`. `--json` prints one object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bua.dialogue import SCORING_RULES

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def read_history(source: str, vocab, columns: list[str], user: str | None, max_history: int):
    """(user id or None, the last `max_history` events) from a table, event text, or '-' (stdin)."""
    from bua.events import DataError
    from bua.loaders import load_table, parse_column_options
    from bua.textformat import parse_events

    if source != "-" and Path(source).suffix.lower() in TABLE_SUFFIXES:
        dataset = load_table(source, parse_column_options(columns), vocab=vocab)
        users = {u.user_id: u for u in dataset.users}
        if user is None:
            if len(users) > 1:
                shown = ", ".join(list(users)[:10]) + (" ..." if len(users) > 10 else "")
                raise ValueError(f"{source} holds {len(users)} users ({shown}); choose one with --user")
            user = next(iter(users))
        elif user not in users:
            raise ValueError(f"{source} has no user {user!r} (users: {', '.join(list(users)[:10])})")
        return user, list(users[user].events)[-max_history:]
    if user is not None:
        raise ValueError("--user selects a user of a table; event text holds one user's events")
    if source == "-":
        text, name = sys.stdin.read(), "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"--history {source}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError(source, f"not UTF-8 text (byte offset {err.start})", has_value=False) from None
        name = source
    events = parse_events(text.strip("\n"), vocab, source=name)
    if not events:
        raise ValueError(f"{name}: no events (one per line, e.g. 'Mon 08:10 @home check weather')")
    return None, events[-max_history:]


def _predictor(args: argparse.Namespace):
    from bua import OnDevicePredictor

    scoring = getattr(args, "scoring", None)
    return OnDevicePredictor.from_bundle(args.bundle, n_threads=args.threads,
                                         **({"scoring": scoring} if scoring else {}))


def run_predict(args: argparse.Namespace) -> int:
    from bua.textformat import format_events

    t0 = time.monotonic()
    predictor = _predictor(args)
    user, events = read_history(args.history, predictor.vocab, args.column, args.user, predictor.bundle.max_history)
    t1 = time.monotonic()
    result = predictor.predict(events, top_k=args.top_k, explain=args.explain)
    t2 = time.monotonic()
    timings = {"load_s": round(t1 - t0, 3), "predict_s": round(t2 - t1, 3)}
    if args.json:
        print(json.dumps({"user": user, "history_events": len(events),
                          "top": [{"behavior": s.behavior, "id": s.behavior_id, "probability": s.probability}
                                  for s in result.top],
                          "explanation": result.explanation, "timings": timings}, ensure_ascii=False))
        return 0
    print(f"{'user ' + user + ': ' if user else ''}{len(events)} events, the last: "
          f"{format_events(events[-1:], predictor.vocab)}")
    for task, text in result.explanation.items():
        print(f"\n[{task}]\n  " + text.replace("\n", "\n  "))
    print(f"\ntop-{len(result.top)} next behaviors:")
    for rank, s in enumerate(result.top, 1):
        print(f"  {rank}. {s.behavior:<24} p={s.probability:.3f}")
    print(f"\n(bundle loaded in {timings['load_s']:.2f} s, prediction {timings['predict_s']:.2f} s)")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from bua.textformat import format_events

    predictor = _predictor(args)
    user, events = read_history(args.history, predictor.vocab, args.column, args.user, predictor.bundle.max_history)
    t = time.monotonic()
    sampling = {k: getattr(args, k) for k in ("temperature", "top_p", "min_p") if getattr(args, k) is not None}
    day = predictor.generate(events, explain=args.explain, seed=args.seed, **sampling)
    seconds = round(time.monotonic() - t, 3)
    text = format_events(day.events, predictor.vocab)
    if args.json:
        print(json.dumps({"user": user, "events": text.split("\n"), "constrained": day.constrained,
                          "explanation": day.explanation, "generate_s": seconds}, ensure_ascii=False))
    else:
        print(text)
    return 0


def bundle_info(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """What a bundle is, whether it verifies, and the llama.cpp it would run on."""
    from bua.runtime.bundle import Bundle, BundleError
    from bua.runtime.native import load_native

    info: dict[str, Any] = {"bundle": str(path)}
    try:
        bundle = Bundle.load(path, verify=verify)
        info["verified"] = verify
    except BundleError as err:
        info.update(verified=False, error=str(err))
        return info
    native = load_native()
    build = native.build_info()
    info.update({
        "backbone": bundle.backbone.name, "arch": bundle.backbone.arch, "n_embd": bundle.n_embd,
        "quant": bundle.quant, "max_history": bundle.max_history,
        "files": {rel: entry.size for rel, entry in bundle.files.items()},
        "behaviors": list(bundle.vocab.behaviors), "locations": list(bundle.vocab.locations),
        "parity": bundle.parity,
        "llama_cpp": {"llama_cpp_python": build["llama_cpp_python"],
                      "system_info": build["system_info"].strip(),
                      "problems_on_this_cpu": native.build_problems()},
    })
    return info


def run_info(args: argparse.Namespace) -> int:
    info = bundle_info(args.bundle)
    if args.json:
        print(json.dumps(info, ensure_ascii=False, default=str))
        return 0 if info["verified"] else 1
    if not info["verified"]:
        print(f"bundle {args.bundle}: does NOT verify: {info['error']}")
        return 1
    size = sum(info["files"].values())
    print(f"bundle {args.bundle}: verified (sha256 of every file and of the manifest)")
    print(f"  backbone    {info['backbone']} ({info['arch']}, width {info['n_embd']}), quant {info['quant']}")
    print("  files       " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in info["files"].items())
          + f"; {size / 2**20:.1f} MiB in all")
    print(f"  history     up to {info['max_history']} events")
    print(f"  behaviors   {len(info['behaviors'])}: {', '.join(info['behaviors'][:8])}"
          + (" ..." if len(info["behaviors"]) > 8 else ""))
    print(f"  locations   {len(info['locations'])}: {', '.join(info['locations'][:8])}"
          + (" ..." if len(info["locations"]) > 8 else ""))
    for name, value in info["parity"].items():
        print(f"  parity      {name}: {json.dumps(value, default=str)[:160]}")
    llama = info["llama_cpp"]
    problems = llama["problems_on_this_cpu"]
    state = "CANNOT run here: " + "; ".join(problems) if problems else "runs on this CPU"
    print(f"  llama.cpp   llama-cpp-python {llama['llama_cpp_python']}, {state}\n              {llama['system_info']}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle directory written by bua-export")
    p.add_argument(
        "--history",
        required=True,
        help="CSV/TSV/Parquet log, a file of event lines ('Mon 08:10 @home check weather'), or - for stdin",
    )
    p.add_argument("--user", help="the user whose history to use, when the table holds several")
    p.add_argument("--column", action="append", default=[], metavar="FIELD=NAME",
                   help="column of the table, as for bua eval (fields of bua.loaders.TableColumns)")
    p.add_argument("--explain", action="store_true", help="run the understanding rounds first and print them")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp / onnxruntime threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-k next behaviors of a history, from a bundle")
    _common(p)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--scoring", choices=SCORING_RULES, default=None,
                   help="how behavior names are scored (default: OnDevicePredictor's, constrained; "
                        "docs/ARCHITECTURE.md, 'Prediction by candidate scoring')")
    p.set_defaults(func=run_predict)
    p = sub.add_parser("generate", help="the next day's events of a history, from a bundle")
    _common(p)
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature of the day, 0 = greedy (default: OnDevicePredictor.generate's)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling share (default: generate's)")
    p.add_argument("--min-p", type=float, default=None,
                   help="drop tokens less likely than this share of the best one, 0 = off (default: generate's)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed: one seed, one day (default 0)")
    p.set_defaults(func=run_generate)
    p = sub.add_parser("info", help="what a bundle is, whether it verifies, the llama.cpp it runs on")
    p.add_argument("--bundle", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_info)
