"""Table 4 ablations: `python training/ablations.py --config training/configs/NAME.yaml --out DIR`.

Variants (sec. 4.4), each a curriculum run in DIR/<key>/ evaluated like the full model:

| key             | row               | how                                                              |
|-----------------|-------------------|------------------------------------------------------------------|
| full            | Ours              | stages 1, 2, 3                                                   |
| no_stage1       | w/o stage1        | stages 2, 3 (stage 2 starts from a fresh projector)              |
| no_stage2       | w/o stage2        | stage 3 on the full run's stage 1 (`--init-from`)                 |
| no_stage3       | w/o stage3        | the full run's stage-2 weights, evaluated (no training needed)   |
| no_loss_balance | w/o loss balance  | stages 2, 3 on the full run's stage 1, stage 2 with token-level loss (Eq. 3) |
| item_emb        | item-emb          | stages 1, 2, 3 with the projector fed item embeddings            |

Every variant reuses the full run's pretrained encoder, so rows differ only in what the row
names. The collected table (markdown + JSON) goes to DIR/ablations.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "full": ("Ours", []),
    "no_stage1": ("w/o stage1", ["--stages", "2,3"]),
    "no_stage2": ("w/o stage2", ["--stages", "3", "--init-from", "{full}", "--init-stages", "1"]),
    "no_stage3": ("w/o stage3", None),
    "no_loss_balance": ("w/o loss balance", ["--stages", "2,3", "--init-from", "{full}", "--set", "stage2.loss=token"]),
    "item_emb": ("item-emb", ["--set", "encoder.projector_mode=item_emb"]),
}
PRED = (("rec_w", "Rec_w"), ("prec_w", "Prec_w"), ("overall", "Overall"), ("head", "Head"), ("medium", "Medium"),
        ("tail", "Tail"))


def _run(cmd: list[str]) -> None:
    print("[ablations] " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"ablations: the command above failed with exit code {proc.returncode}")


def run_variant(key: str, config: Path, out: Path, full: Path, launcher: list[str], extra: list[str],
                python: str = sys.executable) -> Path:
    """Trains (or reuses) one variant; returns the path of its evaluation report JSON."""
    label, args = VARIANTS[key]
    if key == "no_stage3" or (key == "full" and (full / "run.json").is_file()
                               and not (full / "eval_report.json").is_file() and _finished(full)):
        stage, name = ("stage2", "eval_report_stage2") if key == "no_stage3" else ("stage3", "eval_report")
        report = full / f"{name}.json"
        if not report.is_file():
            _run(
                [python, "-m", "bua.training.evaluation", str(full), "--stage", stage, "--name", name, "--no-progress"]
            )
        return report
    run_dir = full if key == "full" else out / key
    report = run_dir / "eval_report.json"
    if report.is_file():
        print(f"[ablations] {key}: reusing {report}", flush=True)
        return report
    enc = [] if key == "full" else ["--set", f"encoder.pretrained={full / 'encoder'}"]
    if "--init-from" in (args or []):
        enc = []  # --init-from brings the encoder along
    resume = ["--resume"] if (run_dir / "run.json").is_file() else []
    cmd = (
        launcher
        + [str(HERE / "curriculum.py"), "--config", str(config), "--out", str(run_dir)]
        + resume
        + [a.format(full=full) for a in args]
        + enc
        + extra
    )
    if not launcher:
        cmd = [python] + cmd
    _run(cmd)
    return report


def _finished(run: Path) -> bool:
    record = json.loads((run / "run.json").read_text())
    return record["stages"]["stage3"].get("status") == "done"


def collect(reports: dict[str, Path]) -> dict:
    table = {"prediction": {}, "generation": {}, "runs": {}}
    for key, path in reports.items():
        label = VARIANTS[key][0]
        rep = json.loads(path.read_text())
        table["runs"][label] = str(path.parent)
        for test_set, rows in rep["prediction"].items():
            table["prediction"].setdefault(test_set, {})[label] = rows["BUA"]
        if "generation" in rep:
            table["generation"][label] = rep["generation"]["BUA"]
    return table


def to_markdown(table: dict) -> str:
    def cell(v):
        return "-" if v is None else f"{v:.3f}"

    lines = ["## Table 4: ablations (BUA variants)", ""]
    for test_set, rows in table["prediction"].items():
        lines += [
            f"### Next behavior prediction, {test_set} test set",
            "",
            "| Method | " + " | ".join(t for _, t in PRED) + " |",
            "|---" * (len(PRED) + 1) + "|",
        ]
        lines += [f"| {label} | " + " | ".join(cell(m.get(k)) for k, _ in PRED) + " |" for label, m in rows.items()]
        lines.append("")
    if table["generation"]:
        lines += [
            "### Next-day generation (App. H)",
            "",
            "| Method | Event BLEU | Event TVD | Event JSD | Time BLEU | Time TVD | Time JSD | Loc BLEU | Loc TVD | Loc JSD |",  # noqa: E501
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, m in table["generation"].items():
            lines.append(
                f"| {label} | "
                + " | ".join(cell(m[s][k]) for s in ("event", "timestamp", "location") for k in ("bleu", "tvd", "jsd"))
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Runs the Table 4 ablation variants and collects one table.")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="directory for the variants' runs and the table")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument(
        "--full",
        type=Path,
        default=None,
        help="an existing full run (stages 1-3, evaluated) to reuse instead of OUT/full",
    )
    p.add_argument("--launcher", default="", help='prefix for training runs, e.g. "torchrun --nproc_per_node 8"')
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every variant")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    extra = [a for s in args.set for a in ("--set", s)]
    if args.threads:
        extra += ["--threads", str(args.threads)]
    if args.no_progress:
        extra.append("--no-progress")
    full = args.full or args.out / "full"
    args.out.mkdir(parents=True, exist_ok=True)
    launcher = shlex.split(args.launcher)
    order = ["full"] + [k for k in keys if k != "full"]  # the "Ours" row always leads the table
    reports = {}
    for key in order:
        reports[key] = run_variant(key, args.config, args.out, full, launcher, extra)
    table = collect(reports)
    from bua.fsio import write_bytes, write_json

    write_json(args.out / "ablations.json", table)
    md = to_markdown(table)
    write_bytes(args.out / "ablations.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
