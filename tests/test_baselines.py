"""Baselines: counting models against hand counts, neural ones learn a learnable rule."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from bua.models.baselines import (
    EncoderClassifier,
    Markov,
    MostFrequent,
    PredictionArrays,
    SASRec,
    SASRecConfig,
    prediction_arrays,
)
from bua.models.encoder import BehaviorEncoder, EncoderConfig

torch.set_num_threads(1)
N_BEH, N_LOC = 5, 3


def _arrays(histories: list[list[int]], targets: list[int]) -> PredictionArrays:
    length = max(len(h) for h in histories)
    ev = np.zeros((len(histories), length, 4), dtype=np.int64)
    mask = np.zeros((len(histories), length), dtype=bool)
    for i, h in enumerate(histories):
        ev[i, : len(h), 1] = np.arange(len(h)) * 30
        ev[i, : len(h), 3] = h
        mask[i, : len(h)] = True
    return PredictionArrays(ev, mask, np.array(targets, dtype=np.int64))


def _rule_data(n: int, seed: int) -> PredictionArrays:
    """Sequences of length 3..12 stepping by +1 or +2 (mod 5), the step fixed per sequence:
    the next behavior needs the last two events (a first-order Markov chain cannot tell)."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n):
        start, step, length = rng.integers(0, N_BEH), rng.integers(1, 3), rng.integers(4, 14)
        seqs.append([(start + step * k) % N_BEH for k in range(length)])
    return _arrays([s[:-1] for s in seqs], [s[-1] for s in seqs])


def test_most_frequent():
    data = _arrays([[0], [1], [2], [3]], [2, 2, 1, 4])
    scores = MostFrequent(N_BEH).fit(data).predict_scores(data)
    assert scores.shape == (4, N_BEH)
    assert np.allclose(scores[0], [0, 0.25, 0.5, 0, 0.25])
    assert (scores.argmax(1) == 2).all()


def test_markov_counts_and_fallback():
    train = _arrays([[4, 0], [3, 0], [1, 0], [2, 1]], [1, 1, 2, 3])
    m = Markov(N_BEH).fit(train)
    test = _arrays([[0], [1], [3], [2, 2, 1]], [0, 0, 0, 0])
    scores = m.predict_scores(test)
    assert np.allclose(scores[0], [0, 2 / 3, 1 / 3, 0, 0], atol=1e-6)  # from 0: 1,1,2
    assert scores[1].argmax() == 3 and scores[3].argmax() == 3  # from 1: 3
    assert np.allclose(scores[2], m.prior)  # 3 never seen as a last behavior -> prior
    assert np.allclose(m.prior, [0, 0.5, 0.25, 0.25, 0])


def test_sample_objects_are_accepted():
    @dataclass
    class Sample:
        history: np.ndarray
        target: int

    samples = [Sample(np.array([[0, 60, 1, 2], [0, 90, 2, 3]]), 4),
               Sample(np.array([[1, 60, 0, 1]]), 0)]
    data = prediction_arrays(samples)
    assert data.events.shape == (2, 2, 4) and data.mask.tolist() == [[True, True], [True, False]]
    assert data.targets.tolist() == [4, 0]
    assert Markov(N_BEH).fit(samples).predict_scores(samples).shape == (2, N_BEH)
    short = data.last(1)
    assert short.events[:, 0, 3].tolist() == [3, 1]


def test_targets_outside_vocabulary_are_rejected():
    with pytest.raises(ValueError, match="behavior id 7 but the model has n_behaviors=5"):
        MostFrequent(N_BEH).fit(_arrays([[0]], [7]))


def test_sasrec_defaults_are_app_g():
    c = SASRecConfig()
    assert (c.hidden, c.n_blocks, c.n_heads, c.dropout, c.max_len) == (50, 2, 1, 0.1, 40)
    assert (c.lr, c.batch_size, c.l2_emb, c.patience, c.max_epochs) == (1e-3, 16, 0.01, 5, 200)


def test_sasrec_learns_rule_and_stops():
    train, val, test = _rule_data(400, 0), _rule_data(100, 1), _rule_data(100, 2)
    model = SASRec(N_BEH, max_epochs=20, progress=False).fit(train, val)  # App. G settings
    scores = model.predict_scores(test)
    assert scores.shape == (100, N_BEH) and np.allclose(scores.sum(1), 1, atol=1e-5)
    assert (scores.argmax(1) == test.targets).mean() > 0.85
    markov = Markov(N_BEH).fit(train).predict_scores(test)
    assert (markov.argmax(1) == test.targets).mean() < 0.7  # needs two events: about 0.5
    assert model.report.epochs <= 20 and model.report.best_epoch >= 1
    assert model.report.history[-1]["val_loss"] < model.report.history[0]["val_loss"]


def test_sasrec_left_pads_last_events():
    data = _arrays([[1, 2, 3], [4]], [0, 0])
    model = SASRec(N_BEH, max_len=3, progress=False)
    assert model._sequences(data, with_target=False).tolist() == [[2, 3, 4], [0, 0, 5]]
    assert model._sequences(data, with_target=True).tolist() == [[3, 4, 1], [0, 5, 1]]


def test_encoder_classifier_finetunes_a_copy():
    torch.manual_seed(0)
    enc = BehaviorEncoder(EncoderConfig.tiny(N_BEH, N_LOC, max_len=16)).eval()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    train, val, test = _rule_data(400, 0), _rule_data(100, 1), _rule_data(100, 2)
    clf = EncoderClassifier(N_BEH, N_LOC, enc, lr=3e-3, max_epochs=8, batch_size=32,
                            progress=False).fit(train, val)
    acc = (clf.predict_scores(test).argmax(1) == test.targets).mean()
    assert acc > 0.9
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    with pytest.raises(ValueError, match="n_behaviors=5 but the classifier has 6 behaviors"):
        EncoderClassifier(6, N_LOC, enc)


def test_encoder_classifier_pretrains_when_no_encoder():
    train, val = _rule_data(60, 0), _rule_data(20, 1)
    clf = EncoderClassifier(N_BEH, N_LOC, encoder_size="tiny", max_epochs=1,
                            progress=False).fit(train, val)
    assert clf.pretrain_report is not None and clf.pretrain_report.epochs >= 1
    assert clf.predict_scores(val).shape == (20, N_BEH)


def test_early_stopping_restores_best_weights():
    from bua.models.baselines import _fit_early_stopping

    net = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.ones(4, 1)
    vals = iter([3.0, 1.0, 2.0, 2.5, 4.0, 0.5])
    weights = []

    def val_loss() -> float:
        weights.append(net.weight.detach().clone())
        return next(vals)

    report = _fit_early_stopping(net, opt, 4, lambda idx: net(x[idx]).sum(), val_loss,
                                 max_epochs=6, batch_size=4, patience=3, seed=0,
                                 time_budget_s=None, max_train_samples=None, progress=False,
                                 desc="t")
    assert (report.epochs, report.best_epoch, report.stopped) == (5, 2, "early_stopping")
    assert torch.equal(net.weight, weights[1])
