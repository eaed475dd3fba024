"""The soft-token probe (`bua.training.evaluation.soft_token_probe`): the read-out ceiling that
every evaluation report puts next to BUA's own accuracy."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from bua.training.evaluation import soft_token_probe

torch.set_num_threads(1)
N_BEHAVIORS = 5


def _samples(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [SimpleNamespace(i=i, target=SimpleNamespace(behavior=int(b)))
            for i, b in enumerate(rng.integers(0, N_BEHAVIORS, n))]


def _accuracy(logp: np.ndarray, samples) -> float:
    return float(np.mean(logp.argmax(-1) == [s.target.behavior for s in samples]))


def test_probe_reads_what_the_features_carry_and_nothing_else():
    train, test = _samples(400, 0), _samples(200, 1)
    rng = np.random.default_rng(2)
    directions = rng.normal(size=(N_BEHAVIORS, 16))

    def informative(samples):  # each sample's target direction plus noise
        return np.stack([directions[s.target.behavior] + 0.3 * rng.normal(size=16) for s in samples])

    def noise(samples):
        return rng.normal(size=(len(samples), 16))

    out = soft_token_probe(informative, train, {"natural": test, "empty": []}, N_BEHAVIORS, seed=0)
    assert out["natural"].shape == (200, N_BEHAVIORS) and out["empty"].shape == (0, N_BEHAVIORS)
    assert np.allclose(np.exp(out["natural"]).sum(-1), 1.0)
    assert _accuracy(out["natural"], test) > 0.95
    blind = soft_token_probe(noise, train, {"natural": test}, N_BEHAVIORS, seed=0)
    assert _accuracy(blind["natural"], test) < 0.4
