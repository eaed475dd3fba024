"""Table-1-style next-behavior prediction report: baselines on a dataset (``bua eval``).

Protocol (sec. 4.1, App. C):

1. Users are split 8:1:1 (``bua.samples.split_users``, seed 42 as App. F).
2. Prediction samples: the last ``history_len`` (40) events -> the next behavior. Training and
   validation samples are capped per user (evenly spread over the log) to bound CPU time.
3. Two test sets from the test users: the *natural* set (up to ``test_per_user`` samples per
   user, evenly spread) and the *long-tail* set (class-balanced: up to
   ``long_tail_per_class`` samples of each behavior, drawn from all test samples).
4. Frequency classes (head/medium/tail) from the training users' events (App. C.1).
5. Every model is fitted on the same training samples, early-stopped on the validation
   samples, and scored on both test sets with the six metrics of ``bua.metrics``. The
   behaveGPT row's encoder is first pretrained on next-event prediction over the training
   users' full logs (early-stopped on the validation users); with an output directory it is
   saved to ``OUT/encoder`` (``BehaviorEncoder.load``), for reuse by BUA training.

``prediction_report`` builds the tables from any models' scores, so BUA's own predictions can
be put beside the baselines on the same test sets (:func:`prepare_eval_data` returns them).
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bua.metrics import (
    PREDICTION_METRICS,
    long_tail_indices,
    paired_group_recall_difference,
    paired_rec_w_difference,
    prediction_metrics,
)

METRIC_TITLES = {"rec_w": "Rec_w", "prec_w": "Prec_w", "overall": "Overall", "head": "Head",
                 "medium": "Medium", "tail": "Tail"}
ALL_MODELS = ("most-frequent", "markov", "SASRec", "behaveGPT")


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class PredictionReport:
    """Metrics per test set and model: ``metrics[test_set][model][metric]``."""

    title: str
    metrics: dict[str, dict[str, dict[str, float]]]
    n_samples: dict[str, int]
    frequency_classes: dict[str, int] = field(default_factory=dict)  # class -> #behaviors
    meta: dict[str, Any] = field(default_factory=dict)
    # test set -> model -> [Rec_w of the first row minus this model's, its paired SE]
    paired: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # the same for Tail (bua.metrics.paired_group_recall_difference), and per test set the tail
    # classes present and their samples, which set how far Tail can tell methods apart
    paired_tail: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    tail_support: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(_nan_to_none(self.to_dict()), indent=2) + "\n"

    def to_markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.frequency_classes:
            fc = ", ".join(f"{k} {v}" for k, v in self.frequency_classes.items())
            lines += [f"Behavior classes by training frequency: {fc}.", ""]
        for test_set, rows in self.metrics.items():
            lines += [f"### {test_set} test set ({self.n_samples[test_set]} samples)", "",
                      "| Method | " + " | ".join(METRIC_TITLES[m] for m in PREDICTION_METRICS) + " |",
                      "|---" * (len(PREDICTION_METRICS) + 1) + "|"]
            for name, m in rows.items():
                cells = ["-" if m[k] is None or math.isnan(m[k]) else f"{m[k]:.3f}"
                         for k in PREDICTION_METRICS]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
            if rows:
                first = next(iter(rows))
                se = rows[first].get("rec_w_se")
                text = f"Rec_w standard error: ±{se:.3f} ({first})." if se is not None else ""
                text += " " + paired_sentence(first, self.paired.get(test_set, {}))
                text += " " + paired_sentence(first, self.paired_tail.get(test_set, {}),
                                              self.tail_support.get(test_set))
                if text.strip():
                    lines += [text.strip(), ""]
        return "\n".join(lines)

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.json`` into ``out_dir`` (atomically)."""
        from bua.fsio import write_bytes

        out = Path(out_dir)
        md, js = out / "report.md", out / "report.json"
        write_bytes(md, self.to_markdown().encode())
        write_bytes(js, self.to_json().encode())
        return md, js


def paired_sentence(first: str, pairs: Mapping[str, Sequence[float]],
                    tail_support: Sequence[int] | None = None) -> str:
    """``PredictionReport.paired`` of one test set as a sentence ("" when there is none), or with
    ``tail_support`` (tail classes, samples) ``paired_tail``'s."""
    pairs = {m: v for m, v in pairs.items() if v[0] is not None and not math.isnan(v[0])}
    if not pairs:
        return ""
    lead = f"{first} minus each other method on the same samples (paired SE)"
    if tail_support is not None:
        lead = f"Tail ({tail_support[0]} tail behaviors, {tail_support[1]} samples): {lead}"
    return f"{lead}: " + ", ".join(f"{m} {d:+.3f} ± {e:.3f}" for m, (d, e) in pairs.items()) + "."


def prediction_report(rows: Mapping[str, Any], targets: Mapping[str, np.ndarray] | np.ndarray,
                      n_classes: int, freq_classes: Sequence[str] | Mapping[int, str] | None = None,
                      *, title: str = "Next behavior prediction",
                      meta: Mapping[str, Any] | None = None) -> PredictionReport:
    """The six Table 1 metrics for every model on every test set.

    ``targets``: ``{test_set: true behavior ids [N]}`` (or one array: a single set named
    ``"test"``). ``rows``: ``{model: {test_set: scores}}`` where scores are ``[N, n_classes]``
    scores or ``[N]`` predicted ids; with a single test set a row may be the scores alone.
    Models may leave out test sets. ``freq_classes`` as for ``bua.metrics.prediction_metrics``.
    ``paired`` compares the first row with every other one on each test set (Rec_w difference
    and its paired standard error), so "A beats B" can be told from noise; ``paired_tail`` the
    same for Tail, with ``freq_classes``.
    """
    if not isinstance(targets, Mapping):
        targets = {"test": np.asarray(targets)}
    metrics: dict[str, dict[str, dict[str, float]]] = {name: {} for name in targets}
    scored: dict[str, dict[str, np.ndarray]] = {name: {} for name in targets}
    for model, value in rows.items():
        if not isinstance(value, Mapping):
            if len(targets) != 1:
                raise ValueError(f"row {model!r} gives one score array but there are "
                                 f"{len(targets)} test sets: {sorted(targets)}")
            value = {next(iter(targets)): value}
        for test_set, scores in value.items():
            if test_set not in targets:
                raise ValueError(f"row {model!r} has scores for unknown test set {test_set!r} "
                                 f"(known: {sorted(targets)})")
            y = np.asarray(targets[test_set])
            if len(scores) != len(y):
                raise ValueError(f"row {model!r}: {len(scores)} scores for the {len(y)} samples "
                                 f"of test set {test_set!r}")
            metrics[test_set][model] = prediction_metrics(y, scores, n_classes, freq_classes)
            scored[test_set][model] = np.asarray(scores)
    paired: dict[str, dict[str, list[float]]] = {}
    paired_tail: dict[str, dict[str, list[float]]] = {}
    tail_support: dict[str, list[int]] = {}
    classes = None if freq_classes is None else (
        [freq_classes[c] for c in range(n_classes)] if isinstance(freq_classes, Mapping) else list(freq_classes))
    for test_set, by_model in scored.items():
        y = np.asarray(targets[test_set])
        if len(by_model) < 2 or len(y) < 2:
            continue
        first, *others = by_model
        paired[test_set] = {m: list(paired_rec_w_difference(y, by_model[first], by_model[m], n_classes))
                            for m in others}
        if freq_classes is not None:
            paired_tail[test_set] = {m: list(paired_group_recall_difference(
                y, by_model[first], by_model[m], n_classes, freq_classes)) for m in others}
            is_tail = np.array([c == "tail" for c in classes])[y]
            tail_support[test_set] = [len(np.unique(y[is_tail])), int(is_tail.sum())]
    counts: dict[str, int] = {}
    if freq_classes is not None:
        values = list(freq_classes.values()) if isinstance(freq_classes, Mapping) else list(freq_classes)
        counts = {g: values.count(g) for g in ("head", "medium", "tail")}
    return PredictionReport(title=title, metrics=metrics,
                            n_samples={k: len(v) for k, v in targets.items()},
                            frequency_classes=counts, meta=dict(meta or {}), paired=paired,
                            paired_tail=paired_tail, tail_support=tail_support)


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class BaselineEvalConfig:
    data: str = "simulator"  # "simulator", "foursquare" or a CSV/Parquet path
    columns: dict[str, str] | None = None  # column names of a table (bua.loaders.TableColumns)
    split_seed: int = 42
    seed: int = 0
    history_len: int = 40
    sim_users: int = 300
    sim_days: int = 28
    train_per_user: int | None = 50
    val_per_user: int | None = 20
    test_per_user: int | None = 100
    long_tail_per_class: int = 50
    models: tuple[str, ...] = ALL_MODELS
    encoder_dir: str | None = None  # a saved BehaviorEncoder to fine-tune instead of pretraining
    encoder_size: str = "default"
    # Training caps for a shared 2-core CPU. Epoch caps (not wall-clock budgets) keep runs
    # reproducible; the time budgets are an optional safety net (None: off).
    pretrain_max_epochs: int = 10
    pretrain_windows_per_epoch: int | None = 512
    pretrain_time_budget_s: float | None = None
    sasrec_max_epochs: int = 15  # App. G: 200 with patience 5
    sasrec_samples_per_epoch: int | None = 4096
    sasrec_time_budget_s: float | None = None
    finetune_max_epochs: int = 4
    finetune_samples_per_epoch: int | None = 2048
    finetune_time_budget_s: float | None = None
    progress: bool = True

    @classmethod
    def quick(cls, **overrides: Any) -> "BaselineEvalConfig":
        """Seconds-scale settings for smoke tests: tiny encoder, few users and epochs."""
        base = dict(sim_users=20, sim_days=7, train_per_user=10, val_per_user=5, test_per_user=10,
                    long_tail_per_class=5, encoder_size="tiny", pretrain_max_epochs=1,
                    pretrain_windows_per_epoch=32, sasrec_max_epochs=1, finetune_max_epochs=1,
                    finetune_samples_per_epoch=64, history_len=20)
        return cls(**{**base, **overrides})


@dataclass
class EvalData:
    """Everything the models see, so other models (BUA) can be scored on the same samples."""

    name: str
    vocab: Any  # bua.vocab.Vocabulary
    split: Any  # bua.samples.Split of Datasets
    train: list  # PredictionSample
    val: list
    test_sets: dict[str, list]  # "natural", "long_tail" -> PredictionSample lists
    freq_classes: dict[int, str]

    def targets(self) -> dict[str, np.ndarray]:
        return {k: np.array([s.target.behavior for s in v], dtype=np.int64)
                for k, v in self.test_sets.items()}


def default_foursquare_dir() -> Path:
    """``$BUA_FOURSQUARE_DIR``, else ``shared/data/foursquare_nyc`` beside the checkout
    (``../shared`` from the repository root) or beside the current directory."""
    env = os.environ.get("BUA_FOURSQUARE_DIR")
    if env:
        return Path(env)
    rel = Path("shared") / "data" / "foursquare_nyc"
    candidates = [Path(__file__).resolve().parents[3] / rel, Path.cwd().parent / rel,
                  Path.cwd() / rel]
    for c in candidates:
        if (c / "specific_train.csv").is_file():
            return c
    raise FileNotFoundError("Foursquare NYC data not found in " + ", ".join(map(str, candidates))
                            + "; set BUA_FOURSQUARE_DIR")


def load_dataset(data: str, *, sim_users: int = 300, sim_days: int = 28, seed: int = 0,
                 columns: Mapping[str, str] | None = None):
    """``"simulator"`` (``bua.simulate.simulate``), ``"foursquare"`` (the shared Foursquare
    NYC check-ins via ``bua.loaders.load_foursquare``) or a CSV/Parquet path
    (``bua.loaders.load_table``; ``columns`` renames its columns, e.g. ``{"user": "uid"}``)."""
    if data == "simulator":
        from bua.simulate import simulate

        return simulate(n_users=sim_users, n_days=sim_days, seed=seed)
    path = Path(data)
    if data != "foursquare" and not path.is_file():
        raise FileNotFoundError(f"--data {data!r}: not 'simulator', 'foursquare' or an existing "
                                f"CSV/Parquet file")
    from bua import loaders

    if data == "foursquare":
        return loaders.load_foursquare(default_foursquare_dir())
    return loaders.load_table(path, dict(columns) if columns else None)


def prepare_eval_data(config: BaselineEvalConfig, dataset: Any = None) -> EvalData:
    """Split, samples, test sets and frequency classes for ``config`` (``dataset`` overrides
    ``config.data``)."""
    from bua.samples import prediction_samples, split_users

    ds = dataset if dataset is not None else load_dataset(
        config.data, sim_users=config.sim_users, sim_days=config.sim_days, seed=config.seed,
        columns=config.columns)
    split = split_users(ds, seed=config.split_seed)
    h = config.history_len
    train = prediction_samples(split.train, h, max_per_user=config.train_per_user)
    val = prediction_samples(split.val, h, max_per_user=config.val_per_user)
    natural = prediction_samples(split.test, h, max_per_user=config.test_per_user)
    pool = prediction_samples(split.test, h)
    for part, samples in (("training", train), ("validation", val), ("test", natural)):
        if not samples:
            raise ValueError(f"dataset {ds.name!r} gives no {part} prediction samples with "
                             f"history_len={h}: users need more than {h} events")
    y_pool = np.array([s.target.behavior for s in pool], dtype=np.int64)
    long_tail = [pool[i] for i in long_tail_indices(y_pool, config.long_tail_per_class, config.seed)]
    return EvalData(name=ds.name, vocab=ds.vocab, split=split, train=train, val=val,
                    test_sets={"natural": natural, "long_tail": long_tail},
                    freq_classes=ds.vocab.frequency_classes(split.train))


# ---------------------------------------------------------------------------------------------
# running the baselines


def run_baselines(data: EvalData, config: BaselineEvalConfig, encoder_out: str | Path | None = None
                  ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Fit every model of ``config.models`` and score both test sets. The behaveGPT row uses
    the encoder in ``config.encoder_dir``, or pretrains one on the training users (saved to
    ``encoder_out`` when given). Returns ``({model: {test_set: scores}}, {model: details})``."""
    import torch

    from bua.models.baselines import EncoderClassifier, Markov, MostFrequent, SASRec, prediction_arrays
    from bua.models.encoder import BehaviorEncoder, EncoderConfig
    from bua.models.pretrain import pretrain_encoder

    unknown = set(config.models) - set(ALL_MODELS)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; choose from {ALL_MODELS}")
    nb, nl = data.vocab.n_behaviors, data.vocab.n_locations
    train = prediction_arrays(data.train, config.history_len)
    val = prediction_arrays(data.val, config.history_len)
    tests = {k: prediction_arrays(v, config.history_len) for k, v in data.test_sets.items()}
    scores: dict[str, dict[str, np.ndarray]] = {}
    details: dict[str, Any] = {}
    for name in config.models:
        start = time.monotonic()
        torch.manual_seed(config.seed)
        if name == "most-frequent":
            model: Any = MostFrequent(nb)
        elif name == "markov":
            model = Markov(nb)
        elif name == "SASRec":
            model = SASRec(nb, max_epochs=config.sasrec_max_epochs, seed=config.seed,
                           time_budget_s=config.sasrec_time_budget_s,
                           max_train_samples=config.sasrec_samples_per_epoch,
                           progress=config.progress)
        else:
            if config.encoder_dir:
                encoder = BehaviorEncoder.load(config.encoder_dir)
                encoder.config.check_vocab(nb, nl, source=f"dataset {data.name!r}")
                details["encoder_pretraining"] = {"loaded_from": str(config.encoder_dir),
                                                  "config": encoder.config.to_dict()}
                _log(f"encoder loaded from {config.encoder_dir}")
            else:
                enc_cfg = EncoderConfig.sized(config.encoder_size, nb, nl)
                encoder, pre = pretrain_encoder(
                    list(data.split.train), list(data.split.val), enc_cfg,
                    max_epochs=config.pretrain_max_epochs, seed=config.seed,
                    max_windows_per_epoch=config.pretrain_windows_per_epoch,
                    time_budget_s=config.pretrain_time_budget_s, progress=config.progress)
                details["encoder_pretraining"] = {**pre.to_dict(), "config": enc_cfg.to_dict()}
                _log(pre.summary())
                if encoder_out is not None:
                    encoder.save(encoder_out)
                    _log(f"pretrained encoder saved to {encoder_out}")
            start = time.monotonic()  # the row's seconds: fine-tuning and scoring only
            model = EncoderClassifier(nb, nl, encoder, max_epochs=config.finetune_max_epochs,
                                      seed=config.seed,
                                      max_train_samples=config.finetune_samples_per_epoch,
                                      time_budget_s=config.finetune_time_budget_s,
                                      progress=config.progress)
        model.fit(train, val)
        scores[name] = {k: model.predict_scores(t) for k, t in tests.items()}
        rep = getattr(model, "report", None)
        details[name] = {"seconds": round(time.monotonic() - start, 1),
                         **({"training": rep.to_dict()} if rep is not None else {})}
        extra = (f", {rep.epochs} epochs ({rep.stopped}), best {rep.best_epoch}"
                 if rep is not None else "")
        _log(f"{name}: fitted in {details[name]['seconds']}s{extra}")
    return scores, details


def run_eval(config: BaselineEvalConfig, out_dir: str | Path | None = None, dataset: Any = None
             ) -> PredictionReport:
    """Prepare the data, train every baseline, build (and optionally save) the report."""
    start = time.monotonic()
    data = prepare_eval_data(config, dataset)
    _log(f"{data.name}: {len(data.split.train)}/{len(data.split.val)}/{len(data.split.test)} "
         f"users, {len(data.train)} train / {len(data.val)} val samples, test sets "
         + ", ".join(f"{k} {len(v)}" for k, v in data.test_sets.items()))
    scores, details = run_baselines(
        data, config, encoder_out=None if out_dir is None else Path(out_dir) / "encoder")
    meta = {"dataset": data.name, "config": _jsonable(asdict(config)),
            "users": {"train": len(data.split.train), "val": len(data.split.val),
                      "test": len(data.split.test)},
            "samples": {"train": len(data.train), "val": len(data.val)},
            "n_behaviors": data.vocab.n_behaviors, "n_locations": data.vocab.n_locations,
            "models": details, "seconds": round(time.monotonic() - start, 1)}
    report = prediction_report(scores, data.targets(), data.vocab.n_behaviors, data.freq_classes,
                               title=f"Next behavior prediction on {data.name}", meta=meta)
    if out_dir is not None:
        report.save(out_dir)
    return report


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


def _log(msg: str) -> None:
    """Summary lines (always printed; ``BaselineEvalConfig.progress`` only switches the tqdm bars)."""
    print(f"[bua eval] {msg}", flush=True)
