"""Evaluation of a trained run on the test users: next-behavior prediction (Table 1 metrics,
natural and class-balanced "long-tail" test sets) next to the baselines of `bua.models.baseline_eval`, and
next-day generation (Table 2 metrics) next to a repeat-the-previous-day baseline.

BUA predicts by candidate scoring (every behavior name + end of turn as the final round's
answer, softmax over the summed log-probs), as the on-device runtime does; generation is
greedy up to the end of turn, parsed leniently (`bua.textformat.parse_events_report`).
`prediction_mode: explain` first generates the key-behavior, pattern and summary rounds on
the same sequence (the multi-round setup of sec. 3.4); `direct` asks the final round alone.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from bua.dialogue import GENERATE, PREDICT, STAGE2_EXPLAIN_TASKS, answer_prefix, question_context, round_prompt_segments
from bua.events import events_to_array
from bua.fsio import write_bytes, write_json
from bua.models.baseline_eval import paired_sentence
from bua.training.config import TrainConfig
from bua.training.inference import InferenceSession

PROBE_ROW = "soft-token probe (read-out ceiling)"


def _session_for(model, history: Sequence, task: str, explain: bool, max_new_tokens: int,
                 behavior_names: Sequence[str]) -> InferenceSession:
    """A session holding the prompt of the final round `task` (after rounds 1-3 if `explain`)."""
    tpl, chat = model.template, model.chat
    session = InferenceSession(model)
    arr = events_to_array(history)
    tasks = (list(STAGE2_EXPLAIN_TASKS) if explain else []) + [task]
    tail_after_eot = chat.assistant_suffix[len(chat.end_of_turn):]
    for k, t in enumerate(tasks):
        ctx = question_context(t, history, behavior_names) if t == GENERATE else None
        session.feed_segments(round_prompt_segments(tpl, chat, t, k == 0, k, ctx), arr)
        if k < len(tasks) - 1:
            session.greedy(max_new_tokens)  # feeds the answer and its end of turn
            session.feed_ids(session.tokenize(tail_after_eot))
    return session


def predict_scores(model, samples: Sequence, behavior_names: Sequence[str], explain: bool, max_new_tokens: int,
                   progress: bool = True, desc: str = "BUA predict", scoring: str = "constrained") -> np.ndarray:
    """[N, n_behaviors] log-softmax over candidates of each sample."""
    out = np.zeros((len(samples), len(behavior_names)), dtype=np.float64)
    for i, s in enumerate(tqdm(samples, desc=desc, disable=not progress, leave=False)):
        session = _session_for(model, s.history, PREDICT, explain, max_new_tokens, behavior_names)
        scores = session.score(list(behavior_names), scoring).double()
        out[i] = torch.log_softmax(scores, dim=0).cpu().numpy()
    return out


def generate_days(model, samples: Sequence, vocab, explain: bool, max_new_tokens: int,
                  progress: bool = True) -> tuple[list[np.ndarray], int, int]:
    """Generated next-day events per sample as int arrays [L, 4]; also (lines kept, lines rejected)."""
    from bua.textformat import parse_events_report

    out, kept, rejected = [], 0, 0
    for s in tqdm(samples, desc="BUA generate", disable=not progress, leave=False):
        session = _session_for(model, s.history, GENERATE, explain, max_new_tokens, vocab.behaviors)
        prefix = answer_prefix(GENERATE, s.history)
        session.feed_ids(session.tokenize(prefix))
        text = prefix + session.greedy(max_new_tokens)
        events, errors = parse_events_report(text, vocab)
        kept += len(events)
        rejected += len(errors)
        out.append(events_to_array(events) if events else np.zeros((0, 4), dtype=np.int64))
    return out, kept, rejected


def last_soft_tokens(model, samples: Sequence, batch_size: int = 256) -> np.ndarray:
    """[N, hidden] float32: the soft token of each sample's last history event."""
    from bua.models.pretrain import pad_windows

    out = []
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            windows = [events_to_array(s.history) for s in samples[i:i + batch_size]]
            events, mask = pad_windows(windows, str(model.device))
            soft, _ = model.soft_tokenizer(events, mask)
            last = mask.long().sum(1) - 1
            out.append(soft[torch.arange(len(windows)), last].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def soft_token_probe(features: Callable[[Sequence], np.ndarray], train: Sequence,
                     test_sets: dict[str, Sequence], n_behaviors: int, seed: int,
                     l2: float = 1e-3) -> dict[str, np.ndarray]:
    """The read-out ceiling: a multinomial logistic regression (L2 `l2`, full-batch L-BFGS)
    from the last soft token to the next behavior, fit on the baselines' training samples;
    log-probabilities [N, n_behaviors] per test set. `features(samples)` gives the last soft
    token of each sample's history, [N, hidden] (`last_soft_tokens` of a PyTorch model, or an
    on-device predictor's rows)."""
    x = torch.from_numpy(np.asarray(features(train), dtype=np.float64))
    y = torch.tensor([s.target.behavior for s in train])
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], n_behaviors).double()
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(x), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    out = {}
    with torch.no_grad():
        for name, samples in test_sets.items():
            feats = torch.from_numpy(np.asarray(features(samples), dtype=np.float64)) if samples else x[:0]
            out[name] = torch.log_softmax(probe((feats - mean) / std), -1).numpy()
    return out


def repeat_previous_day(sample) -> np.ndarray:
    """Baseline: the history's last calendar day again, on the target day."""
    last = sample.history[-1].abs_day
    day = [e for e in sample.history if e.abs_day == last]
    arr = events_to_array(day)
    if len(arr) and sample.target_day:
        arr[:, 0] = sample.target_day[0].day
    return arr


def baseline_eval_config(config: TrainConfig, progress: bool):
    from bua.models.baseline_eval import BaselineEvalConfig

    e = config.eval
    return BaselineEvalConfig(
        split_seed=config.data.seed, seed=config.seed, history_len=config.data.history_len,
        train_per_user=e.baseline_train_per_user, val_per_user=e.baseline_val_per_user,
        test_per_user=e.test_per_user, long_tail_per_class=e.long_tail_per_class, models=tuple(e.baselines),
        encoder_size=config.encoder.size, pretrain_time_budget_s=e.baseline_time_budget_s,
        sasrec_time_budget_s=e.baseline_time_budget_s, finetune_time_budget_s=e.baseline_time_budget_s,
        progress=progress)


def evaluate_model(run_dir: str | Path, stage: Optional[str], config: TrainConfig, data, device: torch.device | str,
                   progress: bool = True, model=None) -> dict[str, Any]:
    """The report of one run (its best weights of `stage`, default the final stage)."""
    from bua.metrics import generation_metrics
    from bua.models.baseline_eval import prediction_report, prepare_eval_data, run_baselines
    from bua.samples import generation_samples
    from bua.training.build import load_trained

    start = time.monotonic()
    if model is None:
        model, _, ck = load_trained(run_dir, stage, device)
        stage = ck.final_stage
    model.eval()
    vocab = data.vocab
    bconf = baseline_eval_config(config, progress)
    edata = prepare_eval_data(bconf, data.dataset)
    explain = config.eval.prediction_mode == "explain"
    names = list(vocab.behaviors)
    rows: dict[str, dict[str, np.ndarray]] = {}
    t = time.monotonic()
    rows["BUA"] = {k: predict_scores(model, v, names, explain, config.eval.max_new_tokens, progress, f"BUA {k}",
                                     config.eval.scoring)
                   for k, v in edata.test_sets.items()}
    bua_pred_s = time.monotonic() - t
    rows[PROBE_ROW] = soft_token_probe(lambda samples: last_soft_tokens(model, samples), edata.train,
                                       edata.test_sets, vocab.n_behaviors, config.seed)
    baseline_scores, details = run_baselines(edata, bconf) if bconf.models else ({}, {})
    rows.update(baseline_scores)
    report = prediction_report(rows, edata.targets(), vocab.n_behaviors, edata.freq_classes,
                               title=f"Next behavior prediction, test users of {data.dataset.name}")
    out: dict[str, Any] = {
        "run_dir": str(run_dir), "stage": stage, "prediction_mode": config.eval.prediction_mode,
        "prediction": _clean(report.to_dict()["metrics"]), "prediction_samples": report.n_samples,
        "prediction_paired": _clean(report.paired),
        "prediction_paired_tail": _clean(report.paired_tail), "prediction_tail_support": report.tail_support,
        "frequency_classes": report.frequency_classes, "baseline_details": _clean(details),
        "bua_prediction_seconds": round(bua_pred_s, 1)}
    n_gen = config.eval.generation_samples
    if n_gen > 0:
        per_user = max(1, math.ceil(n_gen / max(1, len(data.test))))
        pool = generation_samples(
            data.test,
            config.data.generation_history_len,
            min_history=min(config.data.generation_history_len, max(2, config.data.history_len // 2)),
            max_per_user=per_user,
        )
        samples = pool[:n_gen]
        if samples:
            t = time.monotonic()
            generated, kept, rejected = generate_days(
                model, samples, vocab, explain, config.eval.max_new_tokens, progress
            )
            reference = [events_to_array(s.target_day) for s in samples]
            gen = {
                "BUA": generation_metrics(generated, reference, vocab.n_behaviors, vocab.n_locations),
                "repeat previous day": generation_metrics(
                    [repeat_previous_day(s) for s in samples], reference, vocab.n_behaviors, vocab.n_locations
                ),
            }
            out["generation"] = _clean(gen)
            out["generation_samples"] = len(samples)
            out["generation_lines"] = {
                "parsed": kept,
                "rejected": rejected,
                "mean_generated_events": float(np.mean([len(g) for g in generated])),
                "mean_reference_events": float(np.mean([len(r) for r in reference])),
            }
            out["bua_generation_seconds"] = round(time.monotonic() - t, 1)
    out["seconds"] = round(time.monotonic() - start, 1)
    return out


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating,)):
        return _clean(float(x))
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


PRED_COLS = (
    ("rec_w", "Rec_w"),
    ("prec_w", "Prec_w"),
    ("overall", "Overall"),
    ("head", "Head"),
    ("medium", "Medium"),
    ("tail", "Tail"),
)


def _cell(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"## Evaluation of {report['run_dir']} ({report['stage']} best, prediction mode {report['prediction_mode']})",
        "",
    ]
    for test_set, models in report["prediction"].items():
        lines += [
            f"### Next behavior prediction, {test_set} test set ({report['prediction_samples'][test_set]} samples)",
            "",
            "| Method | " + " | ".join(t for _, t in PRED_COLS) + " |",
            "|---" * (len(PRED_COLS) + 1) + "|",
        ]
        for name, m in models.items():
            cells = [_cell(m.get(k)) for k, _ in PRED_COLS]
            if m.get("rec_w_se") is not None:
                cells[0] += f" ± {m['rec_w_se']:.3f}"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        first = next(iter(models), "")
        paired = paired_sentence(first, report.get("prediction_paired", {}).get(test_set, {}))
        tail = paired_sentence(first, report.get("prediction_paired_tail", {}).get(test_set, {}),
                               report.get("prediction_tail_support", {}).get(test_set))
        if paired or tail:
            lines += [" ".join(t for t in (paired, tail) if t), ""]
    if "generation" in report:
        lines += [
            f"### Next-day generation ({report['generation_samples']} samples; lines parsed "
            f"{report['generation_lines']['parsed']}, rejected {report['generation_lines']['rejected']})",
            "",
            "| Method | Event BLEU | Event TVD | Event JSD | Time BLEU | Time TVD | Time JSD | Loc BLEU | Loc TVD | Loc JSD |",  # noqa: E501
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in report["generation"].items():
            cells = [_cell(m[s][k]) for s in ("event", "timestamp", "location") for k in ("bleu", "tvd", "jsd")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(run_dir: str | Path, report: dict[str, Any], name: str = "eval_report") -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    md, js = run_dir / f"{name}.md", run_dir / f"{name}.json"
    write_bytes(md, report_markdown(report).encode())
    write_json(js, report)
    return md, js


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m bua.training.evaluation RUN_DIR [--stage stage2]`: (re-)evaluate a finished run."""
    import argparse

    from bua.training.build import load_trained
    from bua.training.data import prepare

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--stage", choices=["stage1", "stage2", "stage3"], default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default=None, help="report file stem (default eval_report or eval_report_<stage>)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    model, config, ck = load_trained(args.run_dir, args.stage, args.device)
    data = prepare(config.data)
    report = evaluate_model(args.run_dir, ck.final_stage, config, data, args.device, not args.no_progress, model=model)
    name = args.name or ("eval_report" if args.stage is None else f"eval_report_{args.stage}")
    md, _ = write_report(args.run_dir, report, name)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
