"""The per-stage JSONL log (loss per step, task and round; lr; validation) and the loss-curve PNG."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from bua.fsio import write_bytes


class JsonlLog:
    """Appends one JSON record per line, flushed at once (a killed run keeps what it logged)."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()

    def truncate_after(self, step: int) -> None:
        """Drops records of steps after `step` (what a killed run logged past its last checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in read_log(self.path) if int(r.get("step", 0)) <= step]
        write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def reset(self) -> None:
        if self.enabled and self.path.is_file():
            self.path.unlink()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a log; a torn last line (killed mid-write) is skipped."""
    out = []
    path = Path(path)
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_loss_curves(run_dir: str | Path, stages: Iterable[str], out: str | Path | None = None) -> Path | None:
    """One panel per stage: training loss per step (and per task), validation loss; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    logs = {s: read_log(run_dir / s / "log.jsonl") for s in stages}
    logs = {s: r for s, r in logs.items() if r}
    if not logs:
        return None
    fig, axes = plt.subplots(1, len(logs), figsize=(5.5 * len(logs), 4), squeeze=False)
    for ax, (stage, records) in zip(axes[0], logs.items()):
        train = [r for r in records if r.get("type") == "train"]
        val = [r for r in records if r.get("type") == "val"]
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", color="black", lw=1.5)
            tasks = sorted({t for r in train for t in r.get("tasks", {})})
            if len(tasks) > 1:
                for task in tasks:
                    pts = [(r["step"], r["tasks"][task]) for r in train if task in r.get("tasks", {})]
                    ax.plot(*zip(*pts), lw=0.8, alpha=0.7, label=f"train {task}")
        if val:
            pts = [(r["step"], r["loss"]) for r in val if not math.isnan(r["loss"])]
            if pts:
                ax.plot(*zip(*pts), "o--", color="tab:red", label="validation")
        ax.set_title(stage)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / "loss_curves.png"
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
