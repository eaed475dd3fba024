"""Next-event pretraining of the behavior encoder (BehaveGPT-style), with early stopping.

Each user's event sequence is cut into windows of ``max_len`` events (training windows overlap
by half; validation windows do not); at every position the model predicts the next event's
behavior, time bucket and location (cross-entropy, summed with ``loss_weights``). The best
validation-loss weights are restored at the end.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bua.models.encoder import BehaviorEncoder, EncoderConfig


@dataclass
class PretrainConfig:
    max_epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 3
    seed: int = 0
    loss_weights: tuple[float, float, float] = (1.0, 0.5, 0.5)  # behavior, time, location
    time_budget_s: float | None = None  # stop (keeping the best weights) after this long
    max_windows_per_epoch: int | None = None  # a fresh random subset each epoch (CPU cap)
    device: str = "cpu"
    progress: bool = True


@dataclass
class PretrainReport:
    epochs: int
    best_epoch: int
    best_val_loss: float
    stopped: str  # "early_stopping" | "max_epochs" | "time_budget"
    seconds: float
    n_train_windows: int
    n_val_windows: int
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        last = self.history[self.best_epoch - 1] if self.history else {}
        return (f"encoder pretraining: {self.epochs} epochs ({self.stopped}), best epoch "
                f"{self.best_epoch} val loss {self.best_val_loss:.4f}, next-behavior acc "
                f"{last.get('val_behavior_acc', float('nan')):.3f}, {self.seconds:.0f}s, "
                f"{self.n_train_windows} train / {self.n_val_windows} val windows")


def user_array(user: Any) -> np.ndarray:
    """A user as int64 ``[L, 4]``: a ``UserHistory`` (``to_array()``), an array, or Events."""
    if isinstance(user, np.ndarray):
        a = user
    elif hasattr(user, "to_array"):
        a = user.to_array()
    else:
        from bua.events import events_to_array

        a = events_to_array(list(user))
    a = np.asarray(a, dtype=np.int64)
    if a.ndim != 2 or a.shape[1] < 4:
        raise ValueError(f"a user's events must be an int array [L, 4], got shape {a.shape}")
    return a[:, :4]


def make_windows(users: Sequence[Any], max_len: int, stride: int) -> list[np.ndarray]:
    """Windows of up to ``max_len`` events (at least 2) every ``stride`` events; the last
    window of each user ends at its last event."""
    out = []
    for u in users:
        a = user_array(u)
        n = len(a)
        if n < 2:
            continue
        if n <= max_len:
            out.append(a)
            continue
        starts = list(range(0, n - max_len + 1, stride))
        if starts[-1] != n - max_len:
            starts.append(n - max_len)
        out.extend(a[s : s + max_len] for s in starts)
    return out


def pad_windows(windows: Sequence[np.ndarray], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows as a padded batch: events int64 [B, L, 4] and a bool mask [B, L]."""
    length = max(len(w) for w in windows)
    events = np.zeros((len(windows), length, 4), dtype=np.int64)
    mask = np.zeros((len(windows), length), dtype=bool)
    for i, w in enumerate(windows):
        events[i, : len(w)] = w
        mask[i, : len(w)] = True
    return torch.from_numpy(events).to(device), torch.from_numpy(mask).to(device)


def next_event_loss(encoder: BehaviorEncoder, events: torch.Tensor, mask: torch.Tensor,
                    weights: Sequence[float] = (1.0, 0.5, 0.5)) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of next behavior / time bucket / location cross-entropies over positions
    whose next event is real; also returns the parts and next-behavior accuracy."""
    logits = encoder(events, mask)
    valid = mask[:, :-1] & mask[:, 1:]
    nxt = events[:, 1:]
    targets = {"behavior": nxt[..., 3][valid],
               "time": torch.div(nxt[..., 1], encoder.config.time_bucket_minutes,
                                 rounding_mode="floor")[valid],
               "location": nxt[..., 2][valid]}
    total = events.new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    for w, name in zip(weights, ("behavior", "time", "location")):
        lg = logits[name][:, :-1][valid]
        loss = F.cross_entropy(lg, targets[name])
        parts[name] = float(loss.detach())
        total = total + w * loss
        if name == "behavior":
            parts["behavior_acc"] = float((lg.argmax(-1) == targets[name]).float().mean())
    parts["n"] = int(valid.sum())
    return total, parts


@torch.no_grad()
def evaluate_windows(encoder: BehaviorEncoder, windows: Sequence[np.ndarray], batch_size: int,
                     weights: Sequence[float], device: str) -> dict[str, float]:
    """Target-weighted mean loss and next-behavior accuracy over windows."""
    encoder.eval()
    tot = acc = 0.0
    n = 0
    for i in range(0, len(windows), batch_size):
        ev, m = pad_windows(windows[i : i + batch_size], device)
        loss, parts = next_event_loss(encoder, ev, m, weights)
        tot += float(loss) * parts["n"]
        acc += parts["behavior_acc"] * parts["n"]
        n += parts["n"]
    return {"loss": tot / max(n, 1), "behavior_acc": acc / max(n, 1)}


def pretrain_encoder(train_users: Sequence[Any], val_users: Sequence[Any], config: EncoderConfig,
                     train: PretrainConfig | None = None, **overrides: Any
                     ) -> tuple[BehaviorEncoder, PretrainReport]:
    """Pretrain a fresh ``BehaviorEncoder(config)`` on next-event prediction over
    ``train_users`` with early stopping on ``val_users`` (UserHistory objects or int arrays
    ``[L, 4]``). Keyword ``overrides`` set ``PretrainConfig`` fields. Returns the encoder with
    the best validation weights, in eval mode, and a report."""
    tc = train or PretrainConfig()
    if overrides:
        tc = PretrainConfig(**{**asdict(tc), **overrides})
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    max_id = _max_ids(list(train_users) + list(val_users))
    if max_id is not None:
        if max_id[0] >= config.n_locations or max_id[1] >= config.n_behaviors:
            raise ValueError(
                f"the users hold location ids up to {max_id[0]} and behavior ids up to {max_id[1]}, "
                f"but the encoder config has n_locations={config.n_locations} and "
                f"n_behaviors={config.n_behaviors}"
            )
    train_w = make_windows(train_users, config.max_len, max(1, config.max_len // 2))
    val_w = make_windows(val_users, config.max_len, config.max_len)
    if not train_w or not val_w:
        raise ValueError(f"need users with >= 2 events: got {len(train_w)} training and "
                         f"{len(val_w)} validation windows")
    encoder = BehaviorEncoder(config).to(tc.device)
    opt = torch.optim.AdamW(encoder.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    best_state = copy.deepcopy(encoder.state_dict())
    best_loss, best_epoch, bad = float("inf"), 0, 0
    history: list[dict[str, float]] = []
    stopped = "max_epochs"
    start = time.monotonic()
    per_epoch = min(len(train_w), tc.max_windows_per_epoch or len(train_w))
    n_batches = (per_epoch + tc.batch_size - 1) // tc.batch_size
    bar = tqdm(total=tc.max_epochs * n_batches, desc="pretrain encoder", disable=not tc.progress,
               leave=False)
    epoch = 0
    for epoch in range(1, tc.max_epochs + 1):
        encoder.train()
        order = rng.permutation(len(train_w))[:per_epoch]
        run = 0.0
        for b in range(n_batches):
            ev, m = pad_windows([train_w[j] for j in order[b * tc.batch_size:(b + 1) * tc.batch_size]],
                           tc.device)
            loss, _ = next_event_loss(encoder, ev, m, tc.loss_weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            opt.step()
            run += float(loss.detach())
            bar.update(1)
        val = evaluate_windows(encoder, val_w, tc.batch_size * 2, tc.loss_weights, tc.device)
        history.append({"epoch": epoch, "train_loss": run / n_batches, "val_loss": val["loss"],
                        "val_behavior_acc": val["behavior_acc"]})
        bar.set_postfix(val_loss=f"{val['loss']:.3f}", acc=f"{val['behavior_acc']:.3f}")
        if val["loss"] < best_loss - 1e-4:
            best_loss, best_epoch, bad = val["loss"], epoch, 0
            best_state = copy.deepcopy(encoder.state_dict())
        else:
            bad += 1
            if bad >= tc.patience:
                stopped = "early_stopping"
                break
        if tc.time_budget_s is not None and time.monotonic() - start > tc.time_budget_s:
            stopped = "time_budget"
            break
    bar.close()
    encoder.load_state_dict(best_state)
    encoder.eval()
    report = PretrainReport(epochs=epoch, best_epoch=best_epoch, best_val_loss=best_loss,
                            stopped=stopped, seconds=time.monotonic() - start,
                            n_train_windows=len(train_w), n_val_windows=len(val_w),
                            history=history)
    return encoder, report


def _max_ids(users: Sequence[Any]) -> tuple[int, int] | None:
    arrays = [user_array(u) for u in users]
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        return None
    return (max(int(a[:, 2].max()) for a in arrays), max(int(a[:, 3].max()) for a in arrays))
