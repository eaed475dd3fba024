"""bua.metrics against hand-computed values, scikit-learn and scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import precision_score, recall_score

from bua.dialogue import EXPLAIN_SECTIONS
from bua.metrics import (
    bleu,
    confusion_counts,
    count_claims,
    explanation_metrics,
    frequency_classes,
    generation_metrics,
    in_sections,
    jsd,
    long_tail_indices,
    named_behaviors,
    paired_group_recall_difference,
    paired_rec_w_difference,
    prediction_metrics,
    ratio_estimate,
    tvd,
)


def test_paired_rec_w_difference_hand_computed():
    y = np.array([0, 1, 2, 0, 1])
    a = np.array([0, 1, 2, 1, 1])  # hits 1 1 1 0 1
    b = np.eye(3)[[0, 0, 2, 1, 0]]  # scores; hits 1 0 1 0 0
    diff, se = paired_rec_w_difference(y, a, b, 3)
    d = np.array([0, 1, 0, 0, 1])
    assert diff == pytest.approx(prediction_metrics(y, a, 3)["rec_w"] - prediction_metrics(y, b, 3)["rec_w"])
    assert se == pytest.approx(d.std(ddof=1) / math.sqrt(5))
    assert paired_rec_w_difference(y, a, a, 3) == (0.0, 0.0)  # same errors: no noise
    with pytest.raises(ValueError, match="pred_b has 4 predictions for 5 samples"):
        paired_rec_w_difference(y, a, a[:4], 3)


def test_ratio_estimate_weighs_units_by_their_size():
    # 7 of 15 lines over three days; residuals 2 - 4r, 5 - 5r, 0 - 6r with r = 7/15
    r, se = ratio_estimate([2, 5, 0], [4, 5, 6])
    assert r == pytest.approx(7 / 15)
    assert se == pytest.approx(math.sqrt((0.4 / 3) ** 2 + (8 / 3) ** 2 + 2.8 ** 2) / math.sqrt(6) / 5)
    assert ratio_estimate([1, 2, 3], [2, 4, 6]) == (0.5, 0.0)  # every day at one rate: no spread
    assert math.isnan(ratio_estimate([1], [2])[1])
    with pytest.raises(ValueError, match="one length"):
        ratio_estimate([1, 2], [2])
    with pytest.raises(ValueError, match="positive sum"):
        ratio_estimate([0], [0])


def test_paired_group_recall_difference_hand_computed():
    groups = ["head", "tail", "tail", "tail"]
    y = np.array([0, 0, 1, 1, 1, 2, 0])          # tail classes present: 1 (3 samples), 2 (1)
    a = np.array([0, 1, 1, 1, 0, 2, 0])          # tail hits 1 1 0 | 1
    b = np.array([0, 0, 1, 0, 0, 1, 0])          # tail hits 1 0 0 | 0
    diff, se = paired_group_recall_difference(y, a, np.eye(4)[b], 4, groups)
    m_a, m_b = (prediction_metrics(y, p, 4, groups)["tail"] for p in (a, b))
    assert diff == pytest.approx(m_a - m_b) == pytest.approx((1 / 3 + 1) / 2)
    d = np.array([0, 1, 0, 1])                   # the tail samples' hit differences, pooled
    assert se == pytest.approx(math.sqrt(d.var(ddof=1) / 3 + d.var(ddof=1) / 1) / 2)
    head = paired_group_recall_difference(y, a, b, 4, dict(enumerate(groups)), "head")
    d_head = np.array([0, -1, 0])                # a misses the second sample of class 0
    assert head == pytest.approx((-1 / 3, math.sqrt(d_head.var(ddof=1) / 3)))
    assert all(math.isnan(v) for v in paired_group_recall_difference(y, a, b, 4, groups, "medium"))
    with pytest.raises(ValueError, match="group must be one of"):
        paired_group_recall_difference(y, a, b, 4, groups, "rare")
    with pytest.raises(ValueError, match="freq_classes has 3 entries but n_classes=4"):
        paired_group_recall_difference(y, a, b, 4, groups[:3])


def test_prediction_metrics_hand_computed():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    m = prediction_metrics(y_true, y_pred, 4, ["head", "head", "tail", "tail"])
    # recall per class 2/3, 1/2, 1 ; precision per class 1, 1/2, 1/2 ; support 3, 2, 1
    assert m["rec_w"] == pytest.approx(4 / 6)
    assert m["rec_w_se"] == pytest.approx(((4 / 6) * (2 / 6) / 6) ** 0.5)
    assert m["prec_w"] == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)
    assert m["overall"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["head"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert math.isnan(m["medium"])  # no medium class at all
    assert m["tail"] == pytest.approx(1.0)  # class 3 is absent from y_true, so only class 2
    as_dict = prediction_metrics(y_true, y_pred, 4, {0: "head", 1: "head", 2: "tail", 3: "tail"})
    assert as_dict == pytest.approx(m, nan_ok=True)
    # Eq. 6 as printed (weights TP+FP) would equal accuracy; ours does not.
    tp, fp, fn = confusion_counts(np.array(y_true), np.array(y_pred), 4)
    eq6 = ((tp + fp) * np.divide(tp, tp + fp, out=np.zeros(4), where=tp + fp > 0)).sum() / (tp + fp).sum()
    assert eq6 == pytest.approx(m["rec_w"])
    assert m["prec_w"] != pytest.approx(m["rec_w"])


def test_prediction_metrics_match_sklearn_on_random_labels():
    rng = np.random.default_rng(3)
    n = 9
    y_true = rng.choice(n, size=500, p=np.array([30, 20, 15, 10, 10, 6, 5, 3, 1]) / 100)
    y_pred = np.where(rng.random(500) < 0.5, y_true, rng.integers(0, n, 500))
    y_pred[y_pred == 8] = 0  # a class that is present but never predicted
    m = prediction_metrics(y_true, y_pred, n)
    assert m["rec_w"] == pytest.approx(recall_score(y_true, y_pred, average="weighted"))
    assert m["prec_w"] == pytest.approx(
        precision_score(y_true, y_pred, average="weighted", zero_division=0)
    )
    assert m["overall"] == pytest.approx(
        recall_score(y_true, y_pred, average="macro", labels=np.unique(y_true))
    )
    assert all(math.isnan(m[g]) for g in ("head", "medium", "tail"))


def test_prediction_metrics_accepts_scores_and_rejects_bad_input():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert prediction_metrics([0, 1, 1], scores, 2)["rec_w"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="3 columns but n_classes=2"):
        prediction_metrics([0, 1], np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="outside 0..1"):
        prediction_metrics([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="freq_classes has 1 entries"):
        prediction_metrics([0, 1], [0, 1], 2, ["head"])


def test_frequency_classes_boundaries():
    counts = {0: 120, 1: 60, 2: 10, 3: 9, 4: 1}  # 200 events; class 5 unseen
    events = np.concatenate([np.full(k, c) for c, k in counts.items()])
    assert frequency_classes(events, 6) == ["head", "head", "medium", "medium", "tail", "tail"]
    with pytest.raises(ValueError, match="n_classes=3"):
        frequency_classes([0, 5], 3)


def test_long_tail_indices_balanced_and_deterministic():
    labels = np.array([0] * 50 + [1] * 7 + [2] * 2)
    idx = long_tail_indices(labels, per_class=5, seed=1)
    assert np.bincount(labels[idx]).tolist() == [5, 5, 2]
    assert np.array_equal(idx, long_tail_indices(labels, per_class=5, seed=1))
    assert not np.array_equal(idx, long_tail_indices(labels, per_class=5, seed=2))
    assert np.all(np.diff(idx) > 0)


def test_bleu_hand_computed():
    # p1..p4 = 4/5, 3/4, 2/3, 1/2 ; equal lengths -> BP = 1
    assert bleu([1, 2, 3, 4, 5], [1, 2, 3, 4, 6]) == pytest.approx(0.2 ** 0.25)
    # no 4-gram in a 3-token candidate: smoothed 0.1 ; BP = exp(1 - 4/3)
    assert bleu([1, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.exp(-1 / 3) * 0.1 ** 0.25)
    # clipping: one match for four 7s; higher orders smoothed
    expected = (1 / 4 * 0.1 / 3 * 0.1 / 2 * 0.1 / 1) ** 0.25
    assert bleu([7, 7, 7, 7], [7, 1, 2, 3]) == pytest.approx(expected)
    assert bleu([], [1, 2]) == 0.0
    assert bleu([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)


def test_tvd_and_jsd():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
    assert tvd(p, q) == pytest.approx(0.5)
    assert jsd(p, q) == pytest.approx(math.sqrt(0.5 * math.log(2)))
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.random(7), rng.random(7)
        assert jsd(a, b) == pytest.approx(jensenshannon(a, b))
    assert jsd(p, p) == 0.0
    assert jsd([1, 0], [0, 1]) == pytest.approx(math.sqrt(math.log(2)))
    with pytest.raises(ValueError):
        tvd([0, 0], [1, 0])


def test_generation_metrics_streams():
    # rows: day, minute, location, behavior
    real = np.array([[0, 480, 1, 2], [0, 500, 1, 3], [0, 600, 2, 2], [0, 700, 0, 1]])
    perfect = generation_metrics([real], [real], n_behaviors=4, n_locations=3)
    for stream in ("event", "timestamp", "location"):
        assert perfect[stream]["bleu"] == pytest.approx(1.0)
        assert perfect[stream]["tvd"] == 0.0
        assert perfect[stream]["jsd"] == 0.0
    shifted = real.copy()
    shifted[:, 1] += 60  # two buckets later: events and places unchanged
    m = generation_metrics([shifted], [real], n_behaviors=4, n_locations=3)
    assert m["event"]["bleu"] == pytest.approx(1.0) and m["location"]["tvd"] == 0.0
    # real buckets 16, 16, 20, 23 ; generated 18, 18, 22, 25 -> disjoint
    assert m["timestamp"]["tvd"] == pytest.approx(1.0)
    assert m["timestamp"]["jsd"] == pytest.approx(math.sqrt(math.log(2)))
    with pytest.raises(ValueError, match="1 generated sequences but 2"):
        generation_metrics([real], [real, real])
    with pytest.raises(ValueError, match="shape"):
        generation_metrics([real[:, :3]], [real])


def test_generation_metrics_accepts_events_and_empty_generations():
    from bua.events import Event

    real = [Event(0, 480, 1, 2), Event(0, 500, 1, 3), Event(0, 600, 2, 2)]
    m = generation_metrics([real, []], [real, real], n_behaviors=4, n_locations=3)
    # mean of 0.0 (empty) and an exact 3-event copy, whose missing 4-gram is smoothed to 0.1
    assert m["event"]["bleu"] == pytest.approx(0.5 * 0.1 ** 0.25)
    assert m["location"]["tvd"] == 0.0


# ---------------------------------------------------------------------------------------------
# Explanations

NAMES = ["watching video", "short videos", "video", "gaming", "music"]


def test_named_behaviors_prefers_the_longer_name_and_whole_words():
    text = "Frequent: Short videos (3), watching video (2). Videogames no; gaming -> music, gaming."
    assert named_behaviors(text, NAMES) == ["short videos", "watching video", "gaming", "music", "gaming"]


def test_explanation_metrics_counts_repeats_history_mentions_and_distinct_summaries():
    explanations = [
        {"key_behaviors": "Frequent: gaming (2)\nFrequent: gaming (2)", "summary": "Trait: gamer. music"},
        {"key_behaviors": "Frequent: music (4)", "summary": "Trait: gamer. music"},
        {"key_behaviors": "none", "summary": "Trait: quiet."},
    ]
    histories = [["gaming", "watching video"], ["music"], ["gaming"]]
    m = explanation_metrics(explanations, histories, NAMES)
    assert m["users"] == 3 and m["rounds"] == 6
    assert m["rounds_repeating_a_line"] == 1
    # mentions: gaming, gaming, music | music, music | none -> 5, of which user 0's music is not in its history
    assert m["mentions"] == 5
    assert m["mentions_in_history"] == pytest.approx(4 / 5)
    assert m["users_naming_a_behavior"] == 2
    assert m["distinct_summaries"] == 2
    assert m["distinct_summaries_per_user"] == pytest.approx(2 / 3)


def test_count_claims_reads_bracketed_counts_after_names():
    text = "Frequent: short videos (3), gaming(2), music. Sequences: gaming -> music (2x). videos (1)"
    assert count_claims(text, NAMES) == [("short videos", 3), ("gaming", 2)]
    assert count_claims("Frequent: no behavior repeats.", NAMES) == []


def test_explanation_metrics_checks_claimed_counts_against_the_history():
    explanations = [
        {"key_behaviors": "Frequent: gaming (2), music (2).", "summary": "Habits: gaming (5)."},
        {"key_behaviors": "Frequent: music (1).", "summary": "Trait: quiet."},
        {"key_behaviors": "Frequent: no behavior repeats.", "summary": "Trait: busy."},
    ]
    histories = [["gaming", "music", "gaming"], ["music", "short videos", "short videos"], ["gaming", "music"]]
    m = explanation_metrics(explanations, histories, NAMES)
    # claims: gaming 2 (right), music 2 (1 in history), gaming 5 (2) | music 1 (right)
    assert m["count_claims"] == 4
    assert m["count_claims_right"] == pytest.approx(2 / 4)
    # users 0 and 1 repeat a behavior; user 0 claims gaming (its most frequent), user 1 only music
    assert m["most_frequent_claimed"] == pytest.approx(1 / 2)
    no_claims = explanation_metrics([{"summary": "none"}], [["gaming"]], NAMES)
    assert math.isnan(no_claims["count_claims_right"]) and math.isnan(no_claims["most_frequent_claimed"])


@pytest.mark.parametrize("text, repeats", [
    ("Frequent: 1. watching video (3). 2. watching video (2). 3. gaming (2).", True),
    ("Sequences: gaming -> music (2x); gaming -> music (3x). Time: evening.", True),
    ("Daily routine (1)\nDaily routine (2)", True),
    ("Frequent: watching video (3), gaming (2). Phase shifts: none; the user stays at @home.", False),
    ("Trait: gamer. Habits: gaming at 21.30 @home. Anchors: gaming ~21:06 @home.", False),
])
def test_explanation_metrics_repeats_ignore_numbers(text, repeats):
    assert explanation_metrics([{"key_behaviors": text}], [[]], NAMES)["rounds_repeating_a_line"] == int(repeats)


@pytest.mark.parametrize("text, form", [
    ("Frequent: watching video (3), gaming (2). Phase shifts: none; the user stays at @home.", True),
    ("Frequent: no behavior repeats. Phase shifts: gaming (@home -> @work).", True),
    ("Frequent: 0:00 @home messaging", False),  # its last section is missing
    ("Frequent: watching video (2), gaming (3). Phase: 00:06 @home watching video.", False),
    ("Phase shifts: none. Frequent: gaming (2).", False),  # out of order
    ("Frequent:. Phase shifts: none.", False),  # an empty section
    ("The user games. Frequent: gaming (2). Phase shifts: none.", False),  # does not open with the first
])
def test_in_sections_wants_every_header_in_order_with_text(text, form):
    headers = EXPLAIN_SECTIONS["key_behaviors"]
    assert in_sections(text, headers) == form
    m = explanation_metrics([{"key_behaviors": text, "answer": "free text"}], [[]], NAMES, sections=EXPLAIN_SECTIONS)
    assert (m["rounds_in_form"], m["rounds_with_sections"], m["rounds"]) == (int(form), 1, 2)
    assert "rounds_in_form" not in explanation_metrics([{"key_behaviors": text}], [[]], NAMES)


def test_explanation_metrics_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="2 explanations but 1 histories"):
        explanation_metrics([{}, {}], [[]], NAMES)
    with pytest.raises(ValueError, match="at least one user"):
        explanation_metrics([], [], NAMES)
    assert math.isnan(explanation_metrics([{"summary": "none"}], [[]], NAMES)["mentions_in_history"])
