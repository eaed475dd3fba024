"""App. J dynamic task weighting.

For each task i (a round's task: key behaviors, patterns, summary, predict, generate, ...):
L0_i is its first observed loss, L^_i the exponential moving average of its loss, r_i =
L^_i / L0_i, r_bar the mean ratio over valid tasks V = {i: L0_i > 0}, s_i the relative
learning speed and

    w_i = s_i^alpha / sum_{j in V} s_j^alpha * |V|   if L0_i > 0, else 1.

The appendix prints s_i = r_bar / r_i but says "slower tasks will have larger values" and
that the weighting makes the tasks' convergence "more matched"; with r_i = current/initial
loss a slow task has the LARGER ratio, so the printed fraction would favour the fast task.
`form="slower_up"` (default) follows the stated intent, s_i = r_i / r_bar (as GradNorm's
inverse training rate); `form="as_printed"` uses the printed fraction.

Weights are recomputed after every optimizer step from losses averaged over that step (all
ranks together, so every replica uses the same weights) and are applied to the next step.
"""
from __future__ import annotations

from typing import Any

FORMS = ("slower_up", "as_printed")


class TaskWeighter:
    """EMA-based task weights; tasks are registered as they are first seen."""

    def __init__(self, ema_decay: float = 0.9, alpha: float = 1.0, form: str = "slower_up") -> None:
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        if form not in FORMS:
            raise ValueError(f"unknown task weighting form {form!r}; valid: {', '.join(FORMS)}")
        self.ema_decay = ema_decay
        self.alpha = alpha
        self.form = form
        self.initial: dict[str, float] = {}
        self.ema: dict[str, float] = {}

    def update(self, task_losses: dict[str, float]) -> None:
        """Feeds one step's mean loss per task (tasks absent from the step keep their EMA)."""
        for task, loss in task_losses.items():
            loss = float(loss)
            if task not in self.initial:
                self.initial[task] = loss
                self.ema[task] = loss
            else:
                self.ema[task] = self.ema_decay * self.ema[task] + (1.0 - self.ema_decay) * loss

    def weights(self) -> dict[str, float]:
        """The current weight of every task seen so far (1.0 for tasks with L0 <= 0)."""
        valid = [t for t, l0 in self.initial.items() if l0 > 0]
        out = {t: 1.0 for t in self.initial}
        if not valid:
            return out
        ratios = {t: max(self.ema[t], 1e-12) / self.initial[t] for t in valid}
        r_bar = sum(ratios.values()) / len(valid)
        if self.form == "slower_up":
            speed = {t: ratios[t] / r_bar for t in valid}
        else:
            speed = {t: r_bar / ratios[t] for t in valid}
        powered = {t: speed[t] ** self.alpha for t in valid}
        norm = sum(powered.values())
        for t in valid:
            out[t] = powered[t] / norm * len(valid)
        return out

    def weight(self, task: str) -> float:
        return self.weights().get(task, 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"ema_decay": self.ema_decay, "alpha": self.alpha, "form": self.form,
                "initial": dict(self.initial), "ema": dict(self.ema)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema_decay = float(state["ema_decay"])
        self.alpha = float(state["alpha"])
        self.form = str(state["form"])
        self.initial = {k: float(v) for k, v in state["initial"].items()}
        self.ema = {k: float(v) for k, v in state["ema"].items()}
