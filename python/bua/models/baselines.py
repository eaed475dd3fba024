"""Next-behavior prediction baselines of Table 1 (App. E, G), one interface:

    model.fit(train_samples, val_samples) -> model
    model.predict_scores(samples) -> np.ndarray [N, n_behaviors]   (higher = more likely)

Samples are prediction samples (``bua.samples.PredictionSample``: a history and the next
behavior) or a ready :class:`PredictionArrays` (convert once with :func:`prediction_arrays`
when several models see the same samples).

- :class:`MostFrequent`: the training targets' class prior.
- :class:`Markov`: first-order P(next | last behavior) from the training samples'
  (last history behavior -> target) pairs; unseen states fall back to the prior.
- :class:`SASRec` (Kang & McAuley 2018) with App. G's hyperparameters (hidden 50, 2 blocks,
  1 head, dropout 0.1, max length 40, Adam lr 1e-3, batch 16, l2_emb 0.01, early stopping
  with patience 5 on validation loss, at most 200 epochs). Behavior ids only, as SASRec is an
  item-sequence model. Trained with full softmax cross-entropy over the behaviors at every
  position (the original's one-negative BCE is for large item catalogs; here there are only
  tens of classes). ``l2_emb`` adds ``l2_emb * ||E||^2 / 2`` on the item embeddings, as the
  original TensorFlow code's ``l2_regularizer``. ``max_epochs`` / ``time_budget_s`` /
  ``max_train_samples`` cap CPU runs.
- :class:`EncoderClassifier` (the "behaveGPT" row): the pretrained behavior encoder
  fine-tuned end to end as a next-behavior classifier (its behavior head at the last event).
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bua.models.encoder import BehaviorEncoder, EncoderConfig, last_valid

__all__ = [
    "EncoderClassifier",
    "EncoderClassifierConfig",
    "Markov",
    "MostFrequent",
    "PredictionArrays",
    "SASRec",
    "SASRecConfig",
    "prediction_arrays",
]


# ---------------------------------------------------------------------------------------------
# samples -> arrays


@dataclass
class PredictionArrays:
    """Prediction samples as arrays: histories right-padded (last events kept)."""

    events: np.ndarray  # int64 [N, L, 4] (day, minute, location, behavior)
    mask: np.ndarray  # bool [N, L]
    targets: np.ndarray  # int64 [N] next behavior id

    def __post_init__(self) -> None:
        n = len(self.targets)
        if self.events.ndim != 3 or self.events.shape[2] != 4 or self.events.shape[0] != n \
                or self.mask.shape != self.events.shape[:2]:
            raise ValueError(f"inconsistent prediction arrays: events {self.events.shape}, "
                             f"mask {self.mask.shape}, targets {self.targets.shape}")

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, idx: np.ndarray) -> "PredictionArrays":
        return PredictionArrays(self.events[idx], self.mask[idx], self.targets[idx])

    def last(self, max_len: int) -> "PredictionArrays":
        """The last ``max_len`` real events of every history (right-padded again)."""
        if self.events.shape[1] <= max_len:
            return self
        lengths = self.mask.sum(1)
        ev = np.zeros((len(self), max_len, 4), dtype=np.int64)
        m = np.zeros((len(self), max_len), dtype=bool)
        for i, n in enumerate(lengths):
            k = min(int(n), max_len)
            ev[i, :k] = self.events[i, n - k:n]
            m[i, :k] = True
        return PredictionArrays(ev, m, self.targets)


def _sample_parts(s: Any) -> tuple[Any, int]:
    history = getattr(s, "history", None)
    if history is None:
        history = getattr(s, "events")
    target = getattr(s, "target", None)
    if target is None:
        target = getattr(s, "target_behavior")
    if hasattr(target, "behavior"):  # an Event
        target = target.behavior
    return history, int(target)


def prediction_arrays(samples: Sequence[Any] | PredictionArrays, max_len: int | None = None
                      ) -> PredictionArrays:
    """Samples (objects with ``history`` and ``target``) -> :class:`PredictionArrays`,
    keeping at most the last ``max_len`` events of each history."""
    if isinstance(samples, PredictionArrays):
        return samples if max_len is None else samples.last(max_len)
    from bua.events import events_to_batch

    if len(samples) == 0:
        raise ValueError("no prediction samples")
    parts = [_sample_parts(s) for s in samples]
    histories = [p[0] for p in parts]
    longest = max(len(h) for h in histories)
    events, mask = events_to_batch(histories, max_len or max(1, longest))
    return PredictionArrays(events, mask, np.array([p[1] for p in parts], dtype=np.int64))


def _check_targets(data: PredictionArrays, n_behaviors: int, what: str) -> None:
    if len(data) == 0:
        raise ValueError(f"no {what} samples")
    hi = int(max(data.targets.max(), data.events[..., 3][data.mask].max(initial=0)))
    if data.targets.min() < 0 or hi >= n_behaviors:
        raise ValueError(f"{what} samples hold behavior id {hi} but the model has "
                         f"n_behaviors={n_behaviors}")


# ---------------------------------------------------------------------------------------------
# counting baselines


class MostFrequent:
    """Always ranks behaviors by their frequency among the training targets."""

    name = "most-frequent"

    def __init__(self, n_behaviors: int) -> None:
        self.n_behaviors = n_behaviors
        self.prior: np.ndarray | None = None

    def fit(self, train_samples: Any, val_samples: Any = None) -> "MostFrequent":
        data = prediction_arrays(train_samples)
        _check_targets(data, self.n_behaviors, "training")
        counts = np.bincount(data.targets, minlength=self.n_behaviors).astype(np.float64)
        self.prior = counts / counts.sum()
        return self

    def predict_scores(self, samples: Any) -> np.ndarray:
        if self.prior is None:
            raise RuntimeError("call fit() first")
        return np.tile(self.prior, (len(prediction_arrays(samples)), 1))


class Markov:
    """First-order Markov chain P(next behavior | last behavior), add-``alpha`` smoothed;
    states never seen in training fall back to the most-frequent prior."""

    name = "markov"

    def __init__(self, n_behaviors: int, alpha: float = 0.0) -> None:
        self.n_behaviors = n_behaviors
        self.alpha = alpha
        self.transitions: np.ndarray | None = None
        self.prior: np.ndarray | None = None

    def fit(self, train_samples: Any, val_samples: Any = None) -> "Markov":
        data = prediction_arrays(train_samples)
        _check_targets(data, self.n_behaviors, "training")
        n = self.n_behaviors
        last = _last_behaviors(data)
        counts = np.zeros((n, n), dtype=np.float64)
        np.add.at(counts, (last[last >= 0], data.targets[last >= 0]), 1.0)
        self.prior = np.bincount(data.targets, minlength=n) / len(data)
        seen = counts.sum(1) > 0
        probs = np.tile(self.prior, (n, 1))
        smoothed = counts[seen] + self.alpha
        # a tiny share of the prior breaks ties among equally likely next behaviors
        probs[seen] = smoothed / smoothed.sum(1, keepdims=True) + 1e-9 * self.prior
        self.transitions = probs
        return self

    def predict_scores(self, samples: Any) -> np.ndarray:
        if self.transitions is None or self.prior is None:
            raise RuntimeError("call fit() first")
        data = prediction_arrays(samples)
        last = _last_behaviors(data)
        out = np.tile(self.prior, (len(data), 1))
        ok = (last >= 0) & (last < self.n_behaviors)
        out[ok] = self.transitions[last[ok]]
        return out


def _last_behaviors(data: PredictionArrays) -> np.ndarray:
    lengths = data.mask.sum(1)
    idx = np.maximum(lengths - 1, 0)
    last = data.events[np.arange(len(data)), idx, 3].copy()
    last[lengths == 0] = -1
    return last


# ---------------------------------------------------------------------------------------------
# neural baselines: a shared early-stopping loop


@dataclass
class FitReport:
    epochs: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped: str = "max_epochs"
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fit_early_stopping(model: nn.Module, optimizer: torch.optim.Optimizer, n_train: int,
                        train_loss: Callable[[np.ndarray], torch.Tensor],
                        val_loss: Callable[[], float], *, max_epochs: int, batch_size: int,
                        patience: int, seed: int, time_budget_s: float | None,
                        max_train_samples: int | None, progress: bool, desc: str) -> FitReport:
    """Minibatch training with early stopping on ``val_loss``; restores the best weights."""
    rng = np.random.default_rng(seed)
    report = FitReport()
    best_state = copy.deepcopy(model.state_dict())
    bad = 0
    start = time.monotonic()
    per_epoch = min(n_train, max_train_samples or n_train)
    n_batches = (per_epoch + batch_size - 1) // batch_size
    bar = tqdm(total=max_epochs * n_batches, desc=desc, disable=not progress, leave=False)
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = rng.permutation(n_train)[:per_epoch]
        total = 0.0
        for b in range(n_batches):
            loss = train_loss(order[b * batch_size:(b + 1) * batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            bar.update(1)
        model.eval()
        with torch.no_grad():
            vl = float(val_loss())
        report.history.append({"epoch": epoch, "train_loss": total / n_batches, "val_loss": vl})
        report.epochs = epoch
        bar.set_postfix(val_loss=f"{vl:.4f}")
        if vl < report.best_val_loss - 1e-4:
            report.best_val_loss, report.best_epoch, bad = vl, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= patience:
                report.stopped = "early_stopping"
                break
        if time_budget_s is not None and time.monotonic() - start > time_budget_s:
            report.stopped = "time_budget"
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    report.seconds = time.monotonic() - start
    return report


def _index_batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield torch.arange(start, min(n, start + batch_size))


def _mean_cross_entropy(logits_fn: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor,
                        batch_size: int) -> float:
    """Mean cross-entropy of ``logits_fn(index batch)`` against ``targets``, in batches."""
    total = sum(float(F.cross_entropy(logits_fn(i), targets[i.to(targets.device)], reduction="sum"))
                for i in _index_batches(len(targets), batch_size))
    return total / len(targets)


def _batched_scores(logits_fn: Callable[[torch.Tensor], torch.Tensor], n: int,
                    batch_size: int) -> np.ndarray:
    """Softmax of ``logits_fn(index batch)`` for indices 0..n-1, as float64 ``[n, C]``."""
    with torch.no_grad():
        out = [torch.softmax(logits_fn(i), -1).cpu().numpy() for i in _index_batches(n, batch_size)]
    return np.concatenate(out).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# SASRec


@dataclass
class SASRecConfig:
    hidden: int = 50
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.1
    max_len: int = 40
    lr: float = 1e-3
    batch_size: int = 16
    l2_emb: float = 0.01
    patience: int = 5
    max_epochs: int = 200
    time_budget_s: float | None = None
    max_train_samples: int | None = None  # per-epoch random subset (CPU cap); None: all
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


class _SASRecNet(nn.Module):
    def __init__(self, n_items: int, c: SASRecConfig) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, c.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(c.max_len, c.hidden)
        self.drop = nn.Dropout(c.dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(c.hidden, eps=1e-8) for _ in range(c.n_blocks))
        self.attns = nn.ModuleList(nn.MultiheadAttention(c.hidden, c.n_heads, dropout=c.dropout,
                                                         batch_first=True) for _ in range(c.n_blocks))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(c.hidden, eps=1e-8) for _ in range(c.n_blocks))
        self.ffns = nn.ModuleList(nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.Dropout(c.dropout),
                                                nn.ReLU(), nn.Linear(c.hidden, c.hidden),
                                                nn.Dropout(c.dropout)) for _ in range(c.n_blocks))
        self.last_norm = nn.LayerNorm(c.hidden, eps=1e-8)
        self.hidden = c.hidden
        for p in self.parameters():  # as the reference PyTorch port: Xavier-normal matrices
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq`` left-padded item ids (0 = padding) ``[B, L]`` -> logits ``[B, L, n_items]``."""
        length = seq.shape[1]
        x = self.item_emb(seq) * self.hidden ** 0.5
        x = x + self.pos_emb(torch.arange(length, device=seq.device)).unsqueeze(0)
        keep = (seq != 0).unsqueeze(-1).to(x.dtype)
        x = self.drop(x) * keep
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)
        for norm, attn, fnorm, ffn in zip(self.attn_norms, self.attns, self.ffn_norms, self.ffns):
            q = norm(x)
            out, _ = attn(q, x, x, attn_mask=causal, need_weights=False)
            x = q + out
            x = fnorm(x)
            x = (x + ffn(x)) * keep
        h = self.last_norm(x)
        return h @ self.item_emb.weight[1:].t()


class SASRec:
    """SASRec over behavior ids with App. G's hyperparameters (see the module docstring)."""

    name = "SASRec"

    def __init__(self, n_behaviors: int, config: SASRecConfig | None = None, **overrides: Any) -> None:
        c = config or SASRecConfig()
        self.config = SASRecConfig(**{**asdict(c), **overrides}) if overrides else c
        self.n_behaviors = n_behaviors
        torch.manual_seed(self.config.seed)
        self.net = _SASRecNet(n_behaviors, self.config).to(self.config.device)
        self.report: FitReport | None = None

    def _sequences(self, data: PredictionArrays, with_target: bool) -> torch.Tensor:
        """Left-padded behavior ids (+1) of the last max_len events (or max_len-1 + target)."""
        c = self.config
        keep = c.max_len - 1 if with_target else c.max_len
        lengths = data.mask.sum(1)
        seq = np.zeros((len(data), c.max_len), dtype=np.int64)
        for i, n in enumerate(lengths):
            items = data.events[i, max(0, n - keep):n, 3] + 1
            if with_target:
                items = np.append(items, data.targets[i] + 1)
            if len(items):
                seq[i, -len(items):] = items
        return torch.from_numpy(seq).to(c.device)

    def fit(self, train_samples: Any, val_samples: Any) -> "SASRec":
        c = self.config
        train, val = prediction_arrays(train_samples), prediction_arrays(val_samples)
        _check_targets(train, self.n_behaviors, "training")
        _check_targets(val, self.n_behaviors, "validation")
        # every position predicts the next item; the last one predicts the sample's target
        full = self._sequences(train, with_target=True)
        inputs, labels = full[:, :-1], full[:, 1:] - 1  # label -1 where the input is padding
        labels = torch.where(inputs == 0, torch.full_like(labels, -100), labels)
        val_seq = self._sequences(val, with_target=False)
        val_y = torch.from_numpy(val.targets).to(c.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=c.lr, betas=(0.9, 0.98))

        def train_loss(idx: np.ndarray) -> torch.Tensor:
            i = torch.from_numpy(idx).to(c.device)
            logits = self.net(inputs[i])
            loss = F.cross_entropy(logits.reshape(-1, self.n_behaviors), labels[i].reshape(-1),
                                   ignore_index=-100)
            return loss + c.l2_emb * 0.5 * self.net.item_emb.weight.pow(2).sum()

        def val_loss() -> float:
            return _mean_cross_entropy(lambda i: self.net(val_seq[i.to(c.device)])[:, -1], val_y, 512)

        torch.manual_seed(c.seed)
        self.report = _fit_early_stopping(
            self.net, opt, len(train), train_loss, val_loss, max_epochs=c.max_epochs,
            batch_size=c.batch_size, patience=c.patience, seed=c.seed,
            time_budget_s=c.time_budget_s, max_train_samples=c.max_train_samples,
            progress=c.progress, desc="SASRec")
        return self

    def predict_scores(self, samples: Any) -> np.ndarray:
        seq = self._sequences(prediction_arrays(samples), with_target=False)
        self.net.eval()
        return _batched_scores(lambda i: self.net(seq[i.to(seq.device)])[:, -1], len(seq), 512)


# ---------------------------------------------------------------------------------------------
# the fine-tuned encoder ("behaveGPT")


@dataclass
class EncoderClassifierConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01
    batch_size: int = 64
    patience: int = 3
    max_epochs: int = 30
    time_budget_s: float | None = None
    max_train_samples: int | None = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    encoder_size: str = "default"  # used only when fit() must pretrain an encoder itself


class EncoderClassifier:
    """The pretrained behavior encoder fine-tuned (all weights) as a next-behavior classifier:
    cross-entropy of its behavior head at each history's last event against the target.

    ``encoder``: a pretrained ``BehaviorEncoder`` (copied, never modified). Without one,
    ``fit`` first pretrains ``EncoderConfig.sized(encoder_size)`` on the training histories.
    """

    name = "behaveGPT"

    def __init__(self, n_behaviors: int, n_locations: int, encoder: BehaviorEncoder | None = None,
                 config: EncoderClassifierConfig | None = None, **overrides: Any) -> None:
        c = config or EncoderClassifierConfig()
        self.config = EncoderClassifierConfig(**{**asdict(c), **overrides}) if overrides else c
        self.n_behaviors, self.n_locations = n_behaviors, n_locations
        if encoder is not None:
            encoder.config.check_vocab(n_behaviors, n_locations, source="the classifier")
            encoder = copy.deepcopy(encoder).to(self.config.device)
        self.encoder = encoder
        self.report: FitReport | None = None
        self.pretrain_report: Any = None

    def _logits(self, events: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert self.encoder is not None
        return self.encoder.behavior_head(last_valid(self.encoder.final_states(events, mask), mask))

    def _tensors(self, samples: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self.encoder is not None
        data = prediction_arrays(samples, self.encoder.config.max_len)
        d = self.config.device
        return (torch.from_numpy(data.events).to(d), torch.from_numpy(data.mask).to(d),
                torch.from_numpy(data.targets).to(d))

    def fit(self, train_samples: Any, val_samples: Any) -> "EncoderClassifier":
        c = self.config
        if self.encoder is None:
            from bua.models.pretrain import pretrain_encoder

            tr, va = prediction_arrays(train_samples), prediction_arrays(val_samples)
            cfg = EncoderConfig.sized(c.encoder_size, self.n_behaviors, self.n_locations)
            self.encoder, self.pretrain_report = pretrain_encoder(
                [e[m] for e, m in zip(tr.events, tr.mask)], [e[m] for e, m in zip(va.events, va.mask)],
                cfg, seed=c.seed, progress=c.progress, device=c.device)
        train_ev, train_m, train_y = self._tensors(train_samples)
        val_ev, val_m, val_y = self._tensors(val_samples)
        for y, what in ((train_y, "training"), (val_y, "validation")):
            if int(y.max()) >= self.n_behaviors or int(y.min()) < 0:
                raise ValueError(f"{what} samples hold behavior id {int(y.max())} but the model "
                                 f"has n_behaviors={self.n_behaviors}")
        opt = torch.optim.AdamW(self.encoder.parameters(), lr=c.lr, weight_decay=c.weight_decay)

        def train_loss(idx: np.ndarray) -> torch.Tensor:
            i = torch.from_numpy(idx).to(c.device)
            return F.cross_entropy(self._logits(train_ev[i], train_m[i]), train_y[i])

        def val_loss() -> float:
            return _mean_cross_entropy(
                lambda i: self._logits(val_ev[i.to(c.device)], val_m[i.to(c.device)]), val_y, 256)

        torch.manual_seed(c.seed)
        self.report = _fit_early_stopping(
            self.encoder, opt, len(train_y), train_loss, val_loss, max_epochs=c.max_epochs,
            batch_size=c.batch_size, patience=c.patience, seed=c.seed,
            time_budget_s=c.time_budget_s, max_train_samples=c.max_train_samples,
            progress=c.progress, desc="behaveGPT fine-tune")
        return self

    def predict_scores(self, samples: Any) -> np.ndarray:
        if self.encoder is None:
            raise RuntimeError("call fit() first")
        ev, m, _ = self._tensors(samples)
        self.encoder.eval()
        return _batched_scores(lambda i: self._logits(ev[i.to(ev.device)], m[i.to(ev.device)]),
                               len(ev), 256)
