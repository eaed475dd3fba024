"""Accuracy parity between a trained run in PyTorch and its exported on-device bundle.

Both sides score every behavior name as the final answer of the fast-path prediction dialogue
on the same test samples (natural + long-tail sets); the report gives the top-1 agreement, the
top-1 accuracy of each side, the largest difference of the log-softmax over candidates, and for
the samples whose top-1s differ, how close PyTorch's own scores for the two behaviors were (a
near-tie flipped by the runtime's precision, or a real disagreement).

    python -m bua.training.runtime_parity --run RUN_DIR --bundle BUNDLE_DIR [--samples 200]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from bua.dialogue import SCORING_RULES


@dataclass
class ParityReport:
    quant: str
    samples: int
    top1_agreement: float
    top1_accuracy_torch: float
    top1_accuracy_runtime: float
    max_abs_logprob_diff: float
    mean_abs_logprob_diff: float
    # Where the top-1s differ: how far apart PyTorch puts its own top-1 and the runtime's (nats).
    # Below the logprob noise of the runtime's precision, a disagreement is a near-tie flipped.
    disagreements: int
    max_torch_margin_at_disagreement: float
    seconds_torch: float
    seconds_runtime: float


def test_samples(config, n: Optional[int]) -> list:
    """The run's natural and long-tail test sets (the split and samples its evaluation uses)."""
    from bua.models.baseline_eval import prepare_eval_data
    from bua.training.data import load_events
    from bua.training.evaluation import baseline_eval_config

    edata = prepare_eval_data(baseline_eval_config(config, progress=False), load_events(config.data))
    samples = edata.test_sets["natural"] + edata.test_sets["long_tail"]
    return samples[:n] if n else samples


def torch_logprobs(run_dir: str | Path, n_samples: Optional[int] = 200, progress: bool = False,
                   scoring: str = "constrained"):
    """(test samples, PyTorch log-softmax over behavior candidates [N, n_behaviors], seconds)."""
    import torch

    from bua.training.build import load_trained
    from bua.training.evaluation import predict_scores

    model, config, checkpoint = load_trained(run_dir, None, "cpu")
    samples = test_samples(config, n_samples)
    if not samples:
        raise ValueError(f"{run_dir}: its test users give no prediction samples")
    t = time.monotonic()
    with torch.no_grad():
        lp = predict_scores(model, samples, list(checkpoint.vocab.behaviors), explain=False, max_new_tokens=1,
                            progress=progress, desc="PyTorch", scoring=scoring)
    return samples, lp, time.monotonic() - t


def compare(samples: list, torch_lp: np.ndarray, bundle_dir: str | Path, n_threads: int = 1,
            seconds_torch: float = 0.0, scoring: str = "constrained") -> ParityReport:
    """Scores `samples` with the bundle (by the same `scoring` rule) and compares with the
    PyTorch log-probs."""
    from bua.runtime.predictor import OnDevicePredictor

    predictor = OnDevicePredictor.from_bundle(bundle_dir, n_threads=n_threads, scoring=scoring)
    if torch_lp.shape[1] != predictor.vocab.n_behaviors:
        raise ValueError(f"the run scores {torch_lp.shape[1]} behaviors, the bundle {predictor.vocab.n_behaviors}")
    t = time.monotonic()
    raw = np.stack([predictor.behavior_logprobs(s.history, explain=False) for s in samples])
    seconds_runtime = time.monotonic() - t
    runtime_lp = raw - np.logaddexp.reduce(raw, axis=1, keepdims=True)

    targets = np.array([s.target.behavior for s in samples])
    top_torch, top_runtime = torch_lp.argmax(1), runtime_lp.argmax(1)
    diff = np.abs(torch_lp - runtime_lp)
    differ = np.flatnonzero(top_torch != top_runtime)
    margins = torch_lp[differ, top_torch[differ]] - torch_lp[differ, top_runtime[differ]]
    return ParityReport(
        quant=predictor.bundle.quant, samples=len(samples),
        top1_agreement=float((top_torch == top_runtime).mean()),
        top1_accuracy_torch=float((top_torch == targets).mean()),
        top1_accuracy_runtime=float((top_runtime == targets).mean()),
        max_abs_logprob_diff=float(diff.max()), mean_abs_logprob_diff=float(diff.mean()),
        disagreements=int(differ.size), max_torch_margin_at_disagreement=float(margins.max(initial=0.0)),
        seconds_torch=round(seconds_torch, 1), seconds_runtime=round(seconds_runtime, 1))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bua.training.runtime_parity", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="curriculum run directory")
    p.add_argument("--bundle", required=True, type=Path, nargs="+", help="bundle directories exported from it")
    p.add_argument("--samples", type=int, default=200, help="test samples (0: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scoring", choices=SCORING_RULES, default="constrained",
                   help="how each behavior name is scored as the answer (bua.dialogue.SCORING_RULES)")
    args = p.parse_args(argv)
    samples, torch_lp, seconds = torch_logprobs(args.run, args.samples or None, progress=True, scoring=args.scoring)
    for bundle in args.bundle:
        report = compare(samples, torch_lp, bundle, args.threads, seconds, args.scoring)
        print(json.dumps({"bundle": str(bundle), **asdict(report)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
