"""results.png: every measured ratio against its goal, and every side's median latency."""
from __future__ import annotations

import math
from pathlib import Path

from benchkit.goals import Outcome
from benchkit.recorder import SideRecord


def write_plot(outcomes: list[Outcome], records: list[SideRecord], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    goal_rows = [o for o in outcomes if o.goal is not None and not math.isnan(o.value)]
    timed = [r for r in records if not math.isnan(r.median_s)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, max(4.5, 0.42 * max(len(goal_rows), len(timed)) + 1.5)))

    # (a) ratios vs goals, as "fraction of the goal reached" so every goal sits at 1.
    labels, reached, colors = [], [], []
    for o in goal_rows:
        if o.ratio.kind == "min":
            frac = o.value / o.goal
        else:  # overhead: <= goal is good; show goal / max(value, tiny) capped
            frac = (1 + o.goal) / (1 + o.value)
        labels.append(
            f"[{o.comparison}] {o.model}: {o.ratio.name}\n{o.ratio.fmt(o.value)} (goal {o.ratio.fmt(o.goal)})"
        )
        reached.append(frac)
        colors.append("tab:green" if o.met else "tab:red")
    y = range(len(labels))
    ax1.barh(list(y), reached, color=colors)
    ax1.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax1.set_yticks(list(y), labels, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ax1.set_xlabel("measured / goal (>= 1: goal met; log scale)")
    ax1.set_title("ratios against the issue's goals")

    # (b) median latency with the IQR as error bars.
    names = [f"[{r.comparison}] {r.model} {r.side}" for r in timed]
    med = [1e3 * r.median_s for r in timed]
    err = [[1e3 * max(0.0, r.median_s - r.q1_s) for r in timed], [1e3 * max(0.0, r.q3_s - r.median_s) for r in timed]]
    col = ["tab:blue" if r.role == "bua" else "tab:gray" if r.role == "baseline" else "tab:purple" for r in timed]
    y2 = range(len(names))
    ax2.barh(list(y2), med, xerr=err, color=col)
    ax2.set_yticks(list(y2), names, fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xscale("log")
    ax2.set_xlabel("median ms per call (IQR bars; blue = BUA side, gray = alternative)")
    ax2.set_title("latency per side")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
