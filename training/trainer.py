"""One curriculum stage: AdamW + warm-up/cosine, gradient accumulation to the global batch
over micro-batches and ranks, Eq. 3/5 losses with optional App. J task weights, validation
with best-checkpoint selection, resumable checkpoints and the JSONL log.

Data order is a pure function of (seed, stage, epoch), so a resumed run sees exactly the
batches the killed run would have seen; RNG states, optimizer, scheduler, task weighter and
the best validation loss travel in stageN/last/.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from bua.dialogue import ALL_TASKS, GENERATE, PREDICT
from bua.fsio import commit_dir, new_temp_dir
from bua.training import distributed
from bua.training.checkpoint import stage_dir
from bua.training.collate import Batch, Example, collate, length_groups, padded_length
from bua.training.config import StageConfig
from bua.training.data import single_token_id
from bua.training.distill import (
    FirstTokens,
    distillation_loss,
    first_token_log_prior,
    teacher_agreement,
    teacher_distribution,
)
from bua.training.inference import evaluating
from bua.training.losses import dialogue_losses, end_of_turn_weights, round_losses
from bua.training.model import BUAModel
from bua.training.runlog import JsonlLog
from bua.training.schedule import cosine_with_warmup
from bua.training.state import load_adapter, load_projector, rng_state, save_weights, set_rng_state
from bua.training.task_weighting import TaskWeighter

STAGE_INDEX = {"stage1": 1, "stage2": 2, "stage3": 3}


class StageDataError(ValueError):
    """A stage's data cannot fill even one optimizer step."""


@dataclass
class Distilled:
    """The distillation term of a micro-batch (stage 2 with `distill_weight`)."""

    kl: torch.Tensor  # [B] mean KL over each dialogue's predictions
    agree: torch.Tensor  # [B, P] bool: the prediction's first-token top-1 is the teacher's
    predictions: torch.Tensor  # [B, P] bool: a real prediction


@dataclass
class StageResult:
    stage: str
    steps: int
    total_steps: int
    best_step: int
    best_val_loss: float
    first_train_loss: float
    last_train_loss: float
    first_val_loss: float
    seconds: float
    train_dialogues: int
    val_dialogues: int
    tokens: int
    resumed_from: Optional[int] = None
    # with distillation: share of the validation predictions whose first-token top-1 is the
    # encoder's (at step 0 and at the best step): how much of the teacher the LLM reads out
    first_val_teacher_top1: float = math.nan
    best_val_teacher_top1: float = math.nan
    replica_digests: list[str] = field(default_factory=list)  # sha256 of trainable weights per rank
    history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("history")
        return d


def plan_steps(cfg: StageConfig, n_train: int, world_size: int, stage: str) -> tuple[int, int, int]:
    """(accumulation steps, optimizer steps per epoch, total optimizer steps)."""
    per_rank = cfg.global_batch_size // world_size
    if cfg.global_batch_size % world_size or per_rank % cfg.micro_batch_size:
        raise ValueError(f"{stage}.global_batch_size={cfg.global_batch_size} must be a multiple of "
                         f"micro_batch_size ({cfg.micro_batch_size}) x world size ({world_size})")
    accum = per_rank // cfg.micro_batch_size
    per_epoch = n_train // cfg.global_batch_size
    if per_epoch < 1:
        raise StageDataError(f"{stage} has {n_train} training dialogues, fewer than one global batch "
                             f"({stage}.global_batch_size={cfg.global_batch_size}): lower the batch or "
                             f"raise {stage}.train_samples_per_user / data.n_users")
    total = math.ceil(cfg.epochs * per_epoch) if cfg.epochs > 0 else cfg.max_steps
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps) if cfg.epochs > 0 else cfg.max_steps
    return accum, per_epoch, max(1, int(total))


def epoch_order(examples: Sequence[Example], cfg: StageConfig, seed: Sequence[int], steps: int) -> np.ndarray:
    """Example indices in the order an epoch of `steps` optimizer steps trains them (the rest
    after): a permutation drawn from `seed`; of the examples those steps reach, the share
    `cfg.direct_first` of prediction-only ones moves to the front and the share
    `cfg.direct_last` of the remaining ones (with `cfg.direct_last_days`, generation-only ones
    too) to the end (StageConfig.direct_first / direct_last / direct_last_days)."""
    perm = np.random.default_rng(list(seed)).permutation(len(examples))
    if cfg.direct_first > 0 or cfg.direct_last > 0:
        used = perm[:steps * cfg.global_batch_size]

        def only(tasks, i):
            return all(t in tasks for t in examples[i].round_tasks)

        direct = [i for i in used if only((PREDICT,), i)]
        n_front = min(len(direct), round(cfg.direct_first * len(used)))
        front = direct[:n_front]
        last_tasks = (PREDICT, GENERATE) if cfg.direct_last_days else (PREDICT,)
        in_front = set(front)
        back = [i for i in used if only(last_tasks, i) and i not in in_front][:round(cfg.direct_last * len(used))]
        chosen = in_front | set(back)
        rest = [i for i in used if i not in chosen]
        perm = np.concatenate([np.asarray(front + rest + back, dtype=perm.dtype), perm[len(used):]])
    return perm


class StageTrainer:
    """Trains `model` (already set up for `stage`: freezing and initial weights) on `train`."""

    def __init__(self, model: BUAModel, stage: str, cfg: StageConfig, train: Sequence[Example],
                 val: Sequence[Example], run_dir: Path, ctx: distributed.DistContext, seed: int,
                 strategy: str = "ddp", find_unused_parameters: bool = False, progress: bool = True,
                 candidates: Sequence[str] = (), behavior_counts: Sequence[float] = (),
                 pad_to_multiple: int = 1) -> None:
        self.model = model
        self.stage = stage
        self.cfg = cfg
        self.train = list(train)
        self.val = list(val)
        self.run_dir = Path(run_dir)
        self.ctx = ctx
        self.seed = seed
        self.progress = progress and ctx.is_main
        self.pad_to_multiple = pad_to_multiple
        self.accum, self.per_epoch, self.total_steps = plan_steps(cfg, len(self.train), ctx.world_size, stage)
        self.trains_lora = stage in ("stage2", "stage3")
        self.params = [p for _, p in model.named_trainable()]
        if not self.params:
            raise RuntimeError(f"{stage}: the model has no trainable parameters (call set_stage first)")
        opt = cfg.optimizer
        self.optimizer = torch.optim.AdamW(self.params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps,
                                           weight_decay=opt.weight_decay)
        self.scheduler = cosine_with_warmup(self.optimizer, opt, self.total_steps)
        self.weighter = TaskWeighter(cfg.task_weighting.ema_decay, cfg.task_weighting.alpha,
                                     cfg.task_weighting.form) if cfg.task_weighting.enabled else None
        self.tasks = list(ALL_TASKS)
        self.first_tokens = None
        self.log_prior = None
        if cfg.distill_weight > 0:
            if not candidates:
                raise ValueError(f"{stage}.distill_weight needs the candidate behavior names")
            end = model.chat.end_of_turn
            tokenize = model.tokenizer
            self.first_tokens = FirstTokens.build(
                lambda c: tokenize(c + end, add_special_tokens=False)["input_ids"], candidates).to(ctx.device)
            if cfg.distill_prior_adjustment > 0:
                if not behavior_counts:
                    raise ValueError(f"{stage}.distill_prior_adjustment needs the training behavior counts")
                self.log_prior = first_token_log_prior(self.first_tokens, behavior_counts, cfg.distill_prior_adjustment)
        self.end_of_turn_id = (single_token_id(model.tokenizer, model.chat.end_of_turn)
                               if cfg.end_of_turn_weight != 1.0 else None)
        self.n_rounds = max(len(e.round_tasks) for e in self.train + self.val)
        self.wrapped = self._wrap(strategy, find_unused_parameters)
        self.log = JsonlLog(self.run_dir / stage / "log.jsonl", enabled=ctx.is_main)
        self.step = 0
        self.best_val = math.inf
        self.best_step = -1
        self.first_val = math.nan
        self.first_teacher_top1 = self.best_teacher_top1 = math.nan
        self.tokens = 0
        self.history: list[float] = []
        self.resumed_from: Optional[int] = None

    # ------------------------------------------------------------------ setup
    def _wrap(self, strategy: str, find_unused: bool) -> torch.nn.Module:
        if not self.ctx.distributed:
            return self.model
        if strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.ctx.local_rank] if self.ctx.device.type == "cuda" else None
            return DDP(self.model, device_ids=ids, find_unused_parameters=find_unused)
        raise ValueError(f"distributed.strategy {strategy!r} is not supported by this trainer; use 'ddp'")

    def collate(self, examples: Sequence[Example]) -> Batch:
        """A micro-batch of `examples` on the training device."""
        return collate(examples, self.model.pad_id, self.pad_to_multiple).to(self.ctx.device)

    # ------------------------------------------------------------------ data order
    def _step_indices(self, step: int) -> list[list[int]]:
        """This rank's micro-batches (lists of example indices) for optimizer step `step`."""
        epoch, within = divmod(step, self.per_epoch)
        perm = epoch_order(self.train, self.cfg, [self.seed, STAGE_INDEX[self.stage], epoch],
                           min(self.per_epoch, self.total_steps - epoch * self.per_epoch))
        g = self.cfg.global_batch_size
        chunk = perm[within * g:(within + 1) * g]
        per_rank = g // self.ctx.world_size
        mine = chunk[self.ctx.rank * per_rank:(self.ctx.rank + 1) * per_rank]
        mine = sorted(mine.tolist(), key=lambda i: (-len(self.train[i]), i))  # less padding
        m = self.cfg.micro_batch_size
        if not self.cfg.micro_batch_overhead:
            return [mine[k:k + m] for k in range(0, len(mine), m)]
        lengths = [len(self.train[i]) for i in mine]
        runs = length_groups(lengths, m * padded_length(lengths[0], self.pad_to_multiple),
                             self.cfg.micro_batch_overhead, self.pad_to_multiple)
        return [[mine[k] for k in run] for run in runs]

    # ------------------------------------------------------------------ loss
    def _round_weights(self, batch: Batch) -> Optional[torch.Tensor]:
        """[B, R] loss multipliers of the rounds: App. J's task weights times `generation_weight`
        on generation rounds; None when every weight is 1."""
        if self.weighter is None and self.cfg.generation_weight == 1.0:
            return None
        w = dict(self.weighter.weights()) if self.weighter is not None else {}
        w[GENERATE] = w.get(GENERATE, 1.0) * self.cfg.generation_weight
        rows = [[w.get(t, 1.0) for t in tasks] + [1.0] * (self.n_rounds - len(tasks)) for tasks in batch.round_tasks]
        return torch.tensor(rows, dtype=torch.float32, device=self.ctx.device)

    def _token_weights(self, batch: Batch) -> Optional[torch.Tensor]:
        """[B, S-1] `end_of_turn_weights` of the batch; None when `end_of_turn_weight` is 1."""
        if self.end_of_turn_id is None:
            return None
        return end_of_turn_weights(batch.labels, self.end_of_turn_id, self.cfg.end_of_turn_weight)

    def _stats_size(self) -> int:
        return 3 + 2 * len(self.tasks) + 2 * self.n_rounds + 5

    def _stats_vector(self, rounds, losses: torch.Tensor, batch: Batch, distill: Optional[Distilled]) -> torch.Tensor:
        """[loss sum, dialogues, tokens, per-task (sum, n)..., per-round (sum, n)..., positions,
        distill (sum, n), teacher's top-1 copied (sum, n predictions)] of a micro-batch;
        positions = all of the batch's, padding included."""
        nt = len(self.tasks)
        v = torch.zeros(self._stats_size(), dtype=torch.float64)
        v[0] = float(losses.detach().sum())
        if distill is not None:
            has = distill.predictions.any(dim=1)
            v[-4] = float(distill.kl.detach()[has].sum())
            v[-3] = float(has.sum())
            v[-2] = float(distill.agree.sum())
            v[-1] = float(distill.predictions.sum())
        v[1] = len(batch)
        v[2] = float(rounds.counts.sum())
        v[-5] = batch.input_ids.numel()
        means = rounds.means.detach().cpu().double()
        present = rounds.present.cpu()
        for b, tasks in enumerate(batch.round_tasks):
            for r, task in enumerate(tasks):
                if r < means.shape[1] and present[b, r]:
                    k = self.tasks.index(task)
                    v[3 + 2 * k] += means[b, r]
                    v[4 + 2 * k] += 1
                    v[3 + 2 * nt + 2 * r] += means[b, r]
                    v[4 + 2 * nt + 2 * r] += 1
        return v

    def _unpack(self, v: torch.Tensor) -> dict[str, Any]:
        nt, nr = len(self.tasks), self.n_rounds
        out = {"loss": float(v[0] / max(v[1], 1)), "dialogues": int(v[1]), "tokens": int(v[2]),
               "positions": int(v[-5])}
        out["tasks"] = {t: float(v[3 + 2 * k] / v[4 + 2 * k]) for k, t in enumerate(self.tasks) if v[4 + 2 * k] > 0}
        out["rounds"] = {str(r): float(v[3 + 2 * nt + 2 * r] / v[4 + 2 * nt + 2 * r])
                         for r in range(nr) if v[4 + 2 * nt + 2 * r] > 0}
        if v[-3] > 0:
            out["distill"] = float(v[-4] / v[-3])
        if v[-1] > 0:
            out["teacher_top1"] = float(v[-2] / v[-1])
        return out

    def _micro_losses(self, batch: Batch, module: torch.nn.Module, weights: Optional[torch.Tensor],
                      token_weights: Optional[torch.Tensor] = None):
        """(round losses, unweighted; [B] dialogue losses with round `weights` and `token_weights`;
        `Distilled` or None); the distillation term, weighted, is part of the dialogue losses."""
        out = module(batch, self.first_tokens.ids if self.first_tokens is not None else None)
        n_rounds = max(self.n_rounds, batch.n_rounds)
        rounds = round_losses(out.nll, out.loss_rounds, n_rounds)
        weighted = rounds if token_weights is None else round_losses(out.nll, out.loss_rounds, n_rounds, token_weights)
        if weights is not None and weights.shape[1] < rounds.sums.shape[1]:
            pad = torch.ones(weights.shape[0], rounds.sums.shape[1] - weights.shape[1], device=weights.device)
            weights = torch.cat([weights, pad], dim=1)
        distill = None
        if self.first_tokens is not None:
            teacher = teacher_distribution(self.model.soft_tokenizer.encoder, batch.events, batch.events_mask,
                                           batch.predict_events, self.cfg.distill_temperature)
            valid = batch.predict_starts >= 0
            weight = valid.float()
            per_prediction = distillation_loss(out.first_token_logits, teacher, self.first_tokens,
                                               self.log_prior) * weight
            agree = teacher_agreement(out.first_token_logits.detach(), teacher, self.first_tokens) & valid
            distill = Distilled(per_prediction.sum(dim=1) / weight.sum(dim=1).clamp(min=1), agree, valid)
        return rounds, self._dialogue_losses(weighted, weights, distill), distill

    def _dialogue_losses(self, rounds, weights: Optional[torch.Tensor], distill: Optional[Distilled]):
        losses = dialogue_losses(rounds, self.cfg.loss, weights)
        return losses if distill is None else losses + self.cfg.distill_weight * distill.kl

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, Any]:
        self.model.train()
        micro = self._step_indices(self.step)
        per_rank = self.cfg.global_batch_size // self.ctx.world_size
        stats = None
        for k, idx in enumerate(micro):
            batch = self.collate([self.train[i] for i in idx])
            weights = self._round_weights(batch)
            token_weights = self._token_weights(batch)
            last = k == len(micro) - 1
            defer_sync = self.ctx.distributed and not last and hasattr(self.wrapped, "no_sync")
            sync = self.wrapped.no_sync() if defer_sync else contextlib.nullcontext()
            with sync:
                rounds, losses, distill = self._micro_losses(batch, self.wrapped, weights, token_weights)
                (losses.sum() / per_rank).backward()
            if weights is not None or token_weights is not None:
                losses = self._dialogue_losses(rounds, None, distill)
            v = self._stats_vector(rounds, losses, batch, distill)
            stats = v if stats is None else stats + v
        distributed.all_reduce_sum(stats, self.ctx)
        grad_norm = None
        if self.cfg.optimizer.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optimizer.grad_clip))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        info = self._unpack(stats)
        if self.weighter is not None:
            self.weighter.update(info["tasks"])
            info["task_weights"] = self.weighter.weights()
        self.step += 1
        self.tokens += info["tokens"]
        info.update({"type": "train", "step": self.step, "epoch": (self.step - 1) // self.per_epoch, "lr": lr,
                     "grad_norm": grad_norm})
        return info

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Mean dialogue loss (the stage's loss mode, unweighted) over the validation dialogues."""
        mine = self.val[self.ctx.rank::self.ctx.world_size]
        stats = torch.zeros(self._stats_size(), dtype=torch.float64)
        m = self.cfg.micro_batch_size
        mine = sorted(mine, key=len, reverse=True)
        with evaluating(self.model):
            for k in range(0, len(mine), m):
                batch = self.collate(mine[k:k + m])
                rounds, losses, distill = self._micro_losses(batch, self.model, None)
                stats += self._stats_vector(rounds, losses, batch, distill)
        distributed.all_reduce_sum(stats, self.ctx)
        info = self._unpack(stats)
        if info["dialogues"] == 0:
            info["loss"] = math.nan
        info.update({"type": "val", "step": self.step})
        return info

    # ------------------------------------------------------------------ checkpoints
    def _save(self, kind: str) -> None:
        final = stage_dir(self.run_dir, self.stage, kind)
        tmp = new_temp_dir(final) if self.ctx.is_main else None
        tmp = distributed.broadcast_object(str(tmp) if tmp else None, self.ctx)
        tmp = Path(tmp)
        if kind == "last":
            torch.save(rng_state(), tmp / f"rng_rank{self.ctx.rank}.pt")
        distributed.barrier(self.ctx)
        if self.ctx.is_main:
            save_weights(tmp, self.model, with_adapter=self.trains_lora or self.model.has_adapter)
            if kind == "last":
                torch.save(self.trainer_state(), tmp / "trainer_state.pt")
            commit_dir(tmp, final)
        distributed.barrier(self.ctx)

    def trainer_state(self) -> dict[str, Any]:
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "weighter": self.weighter.state_dict() if self.weighter else None, "best_val": self.best_val,
                "best_step": self.best_step, "first_val": self.first_val, "tokens": self.tokens,
                "history": self.history, "teacher_top1": (self.first_teacher_top1, self.best_teacher_top1),
                "world_size": self.ctx.world_size, "total_steps": self.total_steps}

    def resume(self) -> bool:
        """Loads stageN/last/ if present; returns whether it did."""
        last = stage_dir(self.run_dir, self.stage, "last")
        state_path = last / "trainer_state.pt"
        if not state_path.is_file():
            return False
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["world_size"] != self.ctx.world_size:
            raise RuntimeError(f"{self.stage}: the checkpoint in {last} was written by {state['world_size']} "
                               f"processes, this run has {self.ctx.world_size}; resume with the same world size")
        if state["total_steps"] != self.total_steps:
            raise RuntimeError(f"{self.stage}: the checkpoint plans {state['total_steps']} steps, this config "
                               f"{self.total_steps}; resume with the config the run started with")
        load_projector(self.model, last)
        if (last / "adapter").is_dir():
            load_adapter(self.model, last / "adapter")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.weighter is not None and state["weighter"] is not None:
            self.weighter.load_state_dict(state["weighter"])
        self.step = state["step"]
        self.best_val, self.best_step = state["best_val"], state["best_step"]
        self.first_val, self.tokens, self.history = state["first_val"], state["tokens"], state["history"]
        self.first_teacher_top1, self.best_teacher_top1 = state.get("teacher_top1", (math.nan, math.nan))
        set_rng_state(torch.load(last / f"rng_rank{self.ctx.rank}.pt", map_location="cpu", weights_only=False))
        self.log.truncate_after(self.step)
        self.resumed_from = self.step
        return True

    # ------------------------------------------------------------------ loop
    def _due(self, every: int) -> bool:
        if self.step == self.total_steps:
            return True
        if every > 0:
            return self.step % every == 0
        return self.step % self.per_epoch == 0

    def run(self) -> StageResult:
        start = time.monotonic()
        if self.step == 0:
            self.log.reset()
        n_params = sum(p.numel() for p in self.params)
        if self.ctx.is_main:
            print(f"[{self.stage}] {len(self.train)} train / {len(self.val)} val dialogues, {self.total_steps} steps "
                  f"(global batch {self.cfg.global_batch_size} = {self.cfg.micro_batch_size} x {self.accum} accum x "
                  f"{self.ctx.world_size} ranks), {n_params:,} trainable parameters, loss {self.cfg.loss}"
                  + (", micro-batches grouped by length" if self.cfg.micro_batch_overhead > 0 else "")
                  + (" + App. J task weighting" if self.weighter else "")
                  + (f", generate rounds x{self.cfg.generation_weight:g}" if self.cfg.generation_weight != 1 else "")
                  + (f", end of turn x{self.cfg.end_of_turn_weight:g}" if self.cfg.end_of_turn_weight != 1 else "")
                  + (f", resumed at step {self.step}" if self.resumed_from is not None else ""), flush=True)
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.stage, disable=not self.progress,
                   dynamic_ncols=True)
        if self.step == 0 and self.val:
            v = self.validate()
            self.first_val = v["loss"]
            self.first_teacher_top1 = v.get("teacher_top1", math.nan)
            self.log.write({**v, "best": False})
        while self.step < self.total_steps:
            info = self.train_step()
            self.history.append(info["loss"])
            self.log.write(info)
            bar.update(1)
            bar.set_postfix(loss=f"{info['loss']:.3f}", lr=f"{info['lr']:.2e}")
            evaluated = False
            if self._due(self.cfg.eval_every):
                evaluated = True
                if self.val:
                    v = self.validate()
                    better = v["loss"] < self.best_val
                    if better:
                        self.best_val, self.best_step = v["loss"], self.step
                        self.best_teacher_top1 = v.get("teacher_top1", math.nan)
                        self._save("best")
                    self.log.write({**v, "best": better})
                    bar.set_postfix(loss=f"{info['loss']:.3f}", val=f"{v['loss']:.3f}")
                elif self.step == self.total_steps:
                    self.best_step = self.step
                    self._save("best")
            if (self.cfg.save_every > 0 and self.step % self.cfg.save_every == 0) or \
                    (self.cfg.save_every == 0 and evaluated) or self.step == self.total_steps:
                self._save("last")
        bar.close()
        digests = distributed.all_gather_object(self.trainable_digest(), self.ctx)
        if len(set(digests)) != 1:
            raise RuntimeError(f"{self.stage}: the replicas' trainable weights differ after training: {digests}")
        if self.best_step < 0:  # resumed after the final step of a stage whose best was never saved
            self.best_step = self.step
            self._save("best")
        return StageResult(
            stage=self.stage, steps=self.step, total_steps=self.total_steps, best_step=self.best_step,
            best_val_loss=self.best_val, first_train_loss=self.history[0] if self.history else math.nan,
            last_train_loss=self.history[-1] if self.history else math.nan, first_val_loss=self.first_val,
            seconds=time.monotonic() - start, train_dialogues=len(self.train), val_dialogues=len(self.val),
            tokens=self.tokens, resumed_from=self.resumed_from, first_val_teacher_top1=self.first_teacher_top1,
            best_val_teacher_top1=self.best_teacher_top1, replica_digests=digests, history=list(self.history))

    def trainable_digest(self) -> str:
        """sha256 over the bytes of every trainable tensor, in parameter order."""
        h = hashlib.sha256()
        for name, p in self.model.named_trainable():
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
