"""The paper's evaluation metrics: prediction (App. C, Table 1) and generation (App. D, Table 2).

Pure numpy, so the metrics import without torch or scikit-learn (the tests check them against
scikit-learn and scipy).

Prediction (labels are behavior ids ``0..n_classes-1``):

- ``rec_w``: recall weighted by true support (Eq. 7). This is exactly accuracy, i.e. HR@1;
  ``rec_w_se`` is its standard error, sqrt(p (1 - p) / N). Two methods scored on the same
  samples are compared by ``paired_rec_w_difference``: the mean of the per-sample difference
  of their hits and its standard error, which is smaller than either SE when they err on the
  same samples; ``paired_group_recall_difference`` does the same for head, medium or tail.
- ``prec_w``: precision weighted by **true support** (TP + FN), as scikit-learn's
  ``precision_score(average="weighted")`` does; classes never predicted count as precision 0.
  Eq. 6 as printed weights precision by TP + FP (the predicted support); that weighting sums to
  ``sum_c TP_c / N`` = accuracy, so Prec_w would always equal Rec_w, yet the paper's tables
  show different values. We take the standard (scikit-learn) definition.
- ``overall``: macro recall over the classes present in the evaluated set (Eq. 8).
- ``head`` / ``medium`` / ``tail``: macro recall over the present classes of each frequency
  class (Eq. 9-11). Frequency classes come from the TRAINING events (App. C.1): head > 5 %,
  medium 1-5 % (both ends inclusive), tail < 1 % (including behaviors never seen in training).
  A group with no class present in the evaluated set is NaN.

Generation (App. D), each separately for three streams of the generated vs. real events:
``event`` (behavior id), ``timestamp`` (time-of-day bucket ``minute // bucket_minutes``,
30-minute buckets by default; the day of week is not part of the token), ``location``:

- BLEU (Eq. 12): per sample, the generated stream against the real stream, n-grams 1..4 with
  uniform weights, brevity penalty ``min(1, exp(1 - r/c))``, and "method 1" smoothing of Chen &
  Cherry (2014) (a zero n-gram match count is replaced by 0.1, as NLTK's ``method1``), so short
  sequences without 4-gram matches do not collapse to 0. Reported as the mean over samples.
- TVD (Eq. 13) and JSD (Eq. 14, the square root of the Jensen-Shannon divergence, natural log,
  so it lies in [0, sqrt(ln 2)]): between the token distribution of all generated events and
  that of all real events (pooled over the evaluated samples).

Explanations (bua's own check, no paper equivalent): ``explanation_metrics`` over the
understanding rounds of several users: rounds that repeat a line, the share of behavior names
mentioned that occur in that user's history, distinct summaries per user, and whether the
counts the rounds claim ("gaming (3)") are the history's.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bua.vocab import name_pattern

HEAD_MIN_FREQUENCY = 0.05
TAIL_MAX_FREQUENCY = 0.01
FREQUENCY_GROUPS = ("head", "medium", "tail")
PREDICTION_METRICS = ("rec_w", "prec_w", "overall", "head", "medium", "tail")
GENERATION_STREAMS = ("event", "timestamp", "location")
MINUTES_PER_DAY = 1440

__all__ = [
    "FREQUENCY_GROUPS",
    "GENERATION_STREAMS",
    "PREDICTION_METRICS",
    "bleu",
    "clause_key",
    "confusion_counts",
    "count_claims",
    "explanation_metrics",
    "frequency_classes",
    "generation_metrics",
    "in_sections",
    "jsd",
    "long_tail_indices",
    "named_behaviors",
    "paired_group_recall_difference",
    "paired_rec_w_difference",
    "prediction_metrics",
    "ratio_estimate",
    "tvd",
]


# ---------------------------------------------------------------------------------------------
# Prediction


def frequency_classes(
    train_behaviors: Sequence[int] | np.ndarray,
    n_classes: int,
    head_min: float = HEAD_MIN_FREQUENCY,
    tail_max: float = TAIL_MAX_FREQUENCY,
) -> list[str]:
    """Frequency class (``"head"``, ``"medium"`` or ``"tail"``) of every behavior id.

    ``train_behaviors`` are the behavior ids of all training events (App. C.1). Head: share of
    events > ``head_min``; tail: share < ``tail_max`` (unseen behaviors are tail); medium: the rest.
    """
    ids = np.asarray(train_behaviors, dtype=np.int64).ravel()
    if ids.size == 0:
        raise ValueError("frequency_classes needs at least one training event")
    if ids.min() < 0 or ids.max() >= n_classes:
        raise ValueError(
            f"training behavior ids must lie in 0..{n_classes - 1} (n_classes={n_classes}), "
            f"got range {ids.min()}..{ids.max()}"
        )
    share = np.bincount(ids, minlength=n_classes) / ids.size
    return [
        "head" if s > head_min else ("tail" if s < tail_max else "medium") for s in share
    ]


def confusion_counts(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (TP, FP, FN) as int64 arrays of length ``n_classes``."""
    y_true = _labels(y_true, n_classes, "y_true")
    y_pred = _labels(y_pred, n_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    tp = np.bincount(y_true[y_true == y_pred], minlength=n_classes)
    true_support = np.bincount(y_true, minlength=n_classes)
    pred_support = np.bincount(y_pred, minlength=n_classes)
    return tp, pred_support - tp, true_support - tp


def prediction_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    n_classes: int,
    freq_classes: Sequence[str] | Mapping[int, str] | None = None,
) -> dict[str, float]:
    """The six metrics of Table 1 (see the module docstring for the exact definitions).

    ``y_pred`` may also be a score matrix ``[N, n_classes]`` (argmax is taken).
    ``freq_classes`` (from :func:`frequency_classes`, or the ``{id: class}`` dict of
    ``Vocabulary.frequency_classes``) is needed for head/medium/tail; without it those three
    are NaN.
    """
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        if y_pred.shape[1] != n_classes:
            raise ValueError(
                f"score matrix has {y_pred.shape[1]} columns but n_classes={n_classes}"
            )
        y_pred = y_pred.argmax(axis=1)
    y_true = _labels(y_true, n_classes, "y_true")
    if y_true.size == 0:
        raise ValueError("prediction_metrics needs at least one sample")
    tp, fp, fn = confusion_counts(y_true, y_pred, n_classes)
    support = tp + fn
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(n_classes), where=present)
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.zeros(n_classes), where=predicted > 0)
    out = {
        "rec_w": float((support * recall).sum() / support.sum()),
        # Rec_w is accuracy over N independent samples: its binomial standard error.
        "rec_w_se": float(np.sqrt(max(0.0, (tp.sum() / y_true.size) * (1 - tp.sum() / y_true.size)) / y_true.size)),
        "prec_w": float((support * precision).sum() / support.sum()),
        "overall": float(recall[present].mean()),
    }
    if freq_classes is not None:
        freq_classes = _group_list(freq_classes, n_classes)
    for group in FREQUENCY_GROUPS:
        if freq_classes is None:
            out[group] = math.nan
            continue
        sel = present & (np.asarray(freq_classes) == group)
        out[group] = float(recall[sel].mean()) if sel.any() else math.nan
    return out


def paired_rec_w_difference(
    y_true: Sequence[int] | np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int
) -> tuple[float, float]:
    """Rec_w of A minus Rec_w of B on the same samples, and the standard error of that
    difference (per-sample hit differences, sample standard deviation / sqrt(N)).

    Predictions are ids ``[N]`` or score matrices ``[N, n_classes]`` (argmax is taken).
    """
    y_true, d = _hit_differences(y_true, pred_a, pred_b, n_classes)
    if d.size < 2:
        raise ValueError("a paired difference needs at least two samples")
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def paired_group_recall_difference(
    y_true: Sequence[int] | np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int,
    freq_classes: Sequence[str] | Mapping[int, str], group: str = "tail",
) -> tuple[float, float]:
    """The ``group`` metric (head, medium or tail: macro recall over the group's classes present
    in ``y_true``) of A minus B on the same samples, and the standard error of that difference.

    The difference is the mean over the K present classes of each class's mean per-sample hit
    difference; the classes are independent means, so SE = sqrt(sum_c s^2 / n_c) / K, with the
    per-sample variance s^2 pooled over the group's samples (a tail class may hold one sample).
    NaN, NaN when no class of the group is present or the group holds fewer than two samples.
    """
    if group not in FREQUENCY_GROUPS:
        raise ValueError(f"group must be one of {FREQUENCY_GROUPS}, got {group!r}")
    freq_classes = _group_list(freq_classes, n_classes)
    y_true, d = _hit_differences(y_true, pred_a, pred_b, n_classes)
    classes = [c for c in np.unique(y_true) if freq_classes[c] == group]
    in_group = np.isin(y_true, classes)
    if not classes or in_group.sum() < 2:
        return math.nan, math.nan
    variance = d[in_group].var(ddof=1)
    diff = np.mean([d[y_true == c].mean() for c in classes])
    se = math.sqrt(sum(variance / np.count_nonzero(y_true == c) for c in classes)) / len(classes)
    return float(diff), float(se)


def _group_list(freq_classes: Sequence[str] | Mapping[int, str], n_classes: int) -> list[str]:
    """``freq_classes`` (a list, or a ``{id: class}`` dict) as a checked list of ``n_classes``."""
    if isinstance(freq_classes, Mapping):
        missing = [c for c in range(n_classes) if c not in freq_classes]
        if missing:
            raise ValueError(f"freq_classes has no class for behavior ids {missing[:5]}")
        freq_classes = [freq_classes[c] for c in range(n_classes)]
    if len(freq_classes) != n_classes:
        raise ValueError(f"freq_classes has {len(freq_classes)} entries but n_classes={n_classes}")
    return list(freq_classes)


def _hit_differences(y_true: Sequence[int] | np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
                     n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked labels and the per-sample hit of A minus that of B (ids or score matrices)."""
    y_true = _labels(y_true, n_classes, "y_true")
    hits = []
    for name, pred in (("pred_a", pred_a), ("pred_b", pred_b)):
        pred = np.asarray(pred)
        if pred.ndim == 2:
            pred = pred.argmax(axis=1)
        pred = _labels(pred, n_classes, name)
        if pred.shape != y_true.shape:
            raise ValueError(f"{name} has {pred.size} predictions for {y_true.size} samples")
        hits.append((pred == y_true).astype(np.float64))
    return y_true, hits[0] - hits[1]


def long_tail_indices(
    labels: Sequence[int] | np.ndarray, per_class: int, seed: int = 0
) -> np.ndarray:
    """Indices of a class-balanced ("long-tail") test set: up to ``per_class`` samples of each
    class present in ``labels``, drawn without replacement with a fixed seed; sorted."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = np.asarray(labels, dtype=np.int64).ravel()
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if idx.size > per_class:
            idx = rng.choice(idx, size=per_class, replace=False)
        chosen.append(idx)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _labels(y: Sequence[int] | np.ndarray, n_classes: int, name: str) -> np.ndarray:
    y = np.asarray(y).ravel()
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"{name} holds ids {y.min()}..{y.max()} outside 0..{n_classes - 1} "
            f"(n_classes={n_classes})"
        )
    return y


# ---------------------------------------------------------------------------------------------
# Generation


def bleu(
    candidate: Sequence, reference: Sequence, max_n: int = 4, epsilon: float = 0.1
) -> float:
    """Sentence BLEU (Eq. 12) of one token sequence against one reference.

    Uniform weights over n = 1..max_n; modified n-gram precision with clipped counts; zero match
    counts smoothed to ``epsilon`` (Chen & Cherry 2014, method 1), exactly as NLTK's
    ``sentence_bleu(..., smoothing_function=SmoothingFunction().method1)``: an order with no
    n-gram in the candidate has precision ``epsilon / 1``. An empty candidate or reference
    scores 0.
    """
    cand, ref = list(candidate), list(reference)
    c, r = len(cand), len(ref)
    if c == 0 or r == 0:
        return 0.0
    log_p = []
    for n in range(1, max_n + 1):
        cand_ngrams = Counter(tuple(cand[i : i + n]) for i in range(c - n + 1))
        ref_ngrams = Counter(tuple(ref[i : i + n]) for i in range(r - n + 1))
        matches = sum(min(k, ref_ngrams[g]) for g, k in cand_ngrams.items())
        total = max(1, c - n + 1)
        log_p.append(math.log((matches if matches > 0 else epsilon) / total))
    bp = min(1.0, math.exp(1.0 - r / c))
    return bp * math.exp(sum(log_p) / max_n)


def tvd(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance (Eq. 13) between two distributions (normalized here)."""
    p, q = _distribution(p), _distribution(q)
    return float(0.5 * np.abs(p - q).sum())


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (Eq. 14): sqrt of the JS divergence, natural log."""
    p, q = _distribution(p), _distribution(q)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log(a[nz] / m[nz])).sum())

    return math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


def ratio_estimate(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, float]:
    """sum(numerators) / sum(denominators) and its standard error with the units as the samples
    (the delta method), e.g. the share of generated lines that parse, days as the units: the
    lines of one day are not independent of each other. NaN SE for fewer than two units."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"numerators and denominators must be two sequences of one length, got shapes "
                         f"{num.shape} and {den.shape}")
    if den.sum() <= 0:
        raise ValueError("ratio_estimate needs a positive sum of denominators")
    r = float(num.sum() / den.sum())
    if num.size < 2:
        return r, math.nan
    se = math.sqrt(np.sum((num - r * den) ** 2) / (num.size * (num.size - 1))) / den.mean()
    return r, float(se)


def generation_metrics(
    generated: Sequence[Any],
    reference: Sequence[Any],
    n_behaviors: int | None = None,
    n_locations: int | None = None,
    time_bucket_minutes: int = 30,
) -> dict[str, dict[str, float]]:
    """Table 2: BLEU, TVD and JSD for the event, timestamp and location streams.

    ``generated[i]`` and ``reference[i]`` are int arrays ``[L, 4]`` with columns
    (day, minute, location, behavior), as ``bua.events.events_to_array`` gives, or sequences
    of ``Event``; lengths may differ (an empty generation scores BLEU 0). Returns ``{stream: {"bleu", "tvd", "jsd"}}``.
    """
    if len(generated) != len(reference):
        raise ValueError(
            f"{len(generated)} generated sequences but {len(reference)} reference sequences"
        )
    if not generated:
        raise ValueError("generation_metrics needs at least one sample")
    if MINUTES_PER_DAY % time_bucket_minutes:
        raise ValueError(f"time_bucket_minutes={time_bucket_minutes} must divide 1440")
    gen = [_event_array(g, f"generated[{i}]") for i, g in enumerate(generated)]
    ref = [_event_array(r, f"reference[{i}]") for i, r in enumerate(reference)]
    sizes = {
        "event": n_behaviors,
        "timestamp": MINUTES_PER_DAY // time_bucket_minutes,
        "location": n_locations,
    }

    def stream(a: np.ndarray, name: str) -> np.ndarray:
        if name == "event":
            return a[:, 3]
        if name == "timestamp":
            return a[:, 1] // time_bucket_minutes
        return a[:, 2]

    out: dict[str, dict[str, float]] = {}
    for name in GENERATION_STREAMS:
        g_tokens = [stream(a, name) for a in gen]
        r_tokens = [stream(a, name) for a in ref]
        all_g = np.concatenate(g_tokens)
        all_r = np.concatenate(r_tokens)
        k = sizes[name]
        if k is None:
            k = int(max(all_g.max(initial=-1), all_r.max(initial=-1))) + 1
        for arr, what in ((all_g, "generated"), (all_r, "reference")):
            if arr.size and (arr.min() < 0 or arr.max() >= k):
                raise ValueError(
                    f"{what} {name} ids span {arr.min()}..{arr.max()}, outside 0..{k - 1}"
                )
        p = np.bincount(all_g, minlength=k).astype(np.float64)
        q = np.bincount(all_r, minlength=k).astype(np.float64)
        out[name] = {
            "bleu": float(np.mean([bleu(g.tolist(), r.tolist()) for g, r in zip(g_tokens, r_tokens)])),
            "tvd": tvd(p, q) if p.sum() and q.sum() else math.nan,
            "jsd": jsd(p, q) if p.sum() and q.sum() else math.nan,
        }
    return out


def _distribution(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).ravel()
    if p.size == 0 or (p < 0).any() or p.sum() <= 0:
        raise ValueError("a distribution needs non-negative weights with a positive sum")
    return p / p.sum()


def _event_array(a: Any, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray) and len(a) and hasattr(a[0], "behavior"):
        from bua.events import events_to_array  # a sequence of bua.events.Event

        a = events_to_array(list(a))
    a = np.asarray(a, dtype=np.int64)
    if a.size == 0:
        a = a.reshape(0, 4)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"{name} must be an int array [L, 4] (day, minute, location, behavior), got shape {a.shape}")
    return a


# ---------------------------------------------------------------------------------------------
# Explanations

_CLAUSE_END = re.compile(r"\n|[.;:,!?](?:\s|$)")
_REPEAT_NOISE = re.compile(r"\d+x?\b|[^a-z@' -]")


def clause_key(clause: str) -> str:
    """What two clauses are compared by when repeats are counted: lowercased, without numbers
    (an "x" after one too) and brackets, so "gaming (3)" and "gaming (2)" are the same clause."""
    return " ".join(_REPEAT_NOISE.sub(" ", clause.lower()).split())


_CLAIMED_COUNT = re.compile(r"\s*\((\d+)\)")


def _name_spans(lowered: str, behavior_names: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end, name) of every behavior name in lowercased text, in order, as whole words; a
    longer name wins over a shorter one inside it."""
    found: list[tuple[int, int, str]] = []
    for name in sorted(set(behavior_names), key=len, reverse=True):
        pattern = name_pattern(name)
        found += [(m.start(), m.end(), name) for m in pattern.finditer(lowered)]
        lowered = pattern.sub(lambda m: " " * len(m.group()), lowered)
    return sorted(found)


def named_behaviors(text: str, behavior_names: Sequence[str]) -> list[str]:
    """The behavior names mentioned in `text`, in order, matched case-insensitively as whole
    words; a longer name wins over a shorter one inside it ("short videos" is not also "videos")."""
    return [name for _, _, name in _name_spans(text.lower(), behavior_names)]


def count_claims(text: str, behavior_names: Sequence[str]) -> list[tuple[str, int]]:
    """The "<behavior> (<n>)" claims in `text` ("Frequent: gaming (3), music (2)"): each behavior
    name followed by a bracketed count, in order (names found as `named_behaviors` finds them;
    "(2x)", a sequence's count, is not a claim)."""
    lowered = text.lower()
    claims = []
    for _, end, name in _name_spans(lowered, behavior_names):
        m = _CLAIMED_COUNT.match(lowered, end)
        if m:
            claims.append((name, int(m.group(1))))
    return claims


def explanation_metrics(
    explanations: Sequence[Mapping[str, str]],
    history_behaviors: Sequence[Sequence[str]],
    behavior_names: Sequence[str],
    summary_task: str = "summary",
    sections: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Quality of the understanding rounds of several users (one explanation per user).

    ``explanations[i]`` maps each round's task to its answer text for user i;
    ``history_behaviors[i]`` are the behavior names of that user's history, one per event. Returns
    ``users``, ``rounds``; ``rounds_repeating_a_line`` (rounds in which a line, sentence or list
    item occurs twice, numbers and brackets ignored, so "1. gaming (3). 2. gaming (2)" repeats);
    ``mentions`` (behavior names mentioned, with repeats) and ``mentions_in_history`` (the share
    of them that occur in the user's history; NaN without mentions);
    ``users_naming_a_behavior``; ``distinct_summaries`` and ``distinct_summaries_per_user``;
    whether the rounds are right where they count: ``count_claims`` ("gaming (3)",
    `count_claims`), ``count_claims_right`` (the share whose count is the behavior's number of
    events in the history; NaN without claims) and ``most_frequent_claimed`` (of the users whose
    history repeats a behavior, the share whose claims include a most frequent one; NaN if none).
    With `sections` (task -> its answer's section headers in order, e.g.
    `bua.dialogue.EXPLAIN_SECTIONS`): ``rounds_in_form``, the rounds of those tasks whose answer
    has them as its label has them (`in_sections`), and ``rounds_with_sections``, those rounds.
    """
    if len(explanations) != len(history_behaviors):
        raise ValueError(f"{len(explanations)} explanations but {len(history_behaviors)} histories")
    if not explanations:
        raise ValueError("explanation_metrics needs at least one user")
    rounds = repeating = mentions = in_history = naming = 0
    claims = claims_right = repeaters = top_claimed = 0
    in_form = with_sections = 0
    summaries = []
    for explanation, history in zip(explanations, history_behaviors):
        counts = Counter(b.lower() for b in history)
        top = max(counts.values(), default=0)
        claimed = set()
        named_any = False
        for task, text in explanation.items():
            for name, n in count_claims(text, behavior_names):
                claims += 1
                claims_right += counts[name.lower()] == n
                claimed.add(name.lower())
            rounds += 1
            if sections and task in sections:
                with_sections += 1
                in_form += in_sections(text, sections[task])
            parts = [key for part in _CLAUSE_END.split(text.lower()) if (key := clause_key(part))]
            repeating += len(parts) != len(set(parts))
            names = named_behaviors(text, behavior_names)
            mentions += len(names)
            in_history += sum(n.lower() in counts for n in names)
            named_any = named_any or bool(names)
        naming += named_any
        if top >= 2:
            repeaters += 1
            top_claimed += any(counts[name] == top for name in claimed)
        if summary_task in explanation:
            summaries.append(explanation[summary_task].strip())
    distinct = len(set(summaries))
    return {
        "users": len(explanations),
        "rounds": rounds,
        "rounds_repeating_a_line": repeating,
        "mentions": mentions,
        "mentions_in_history": in_history / mentions if mentions else math.nan,
        "users_naming_a_behavior": naming,
        "distinct_summaries": distinct,
        "distinct_summaries_per_user": distinct / len(explanations),
        "count_claims": claims,
        "count_claims_right": claims_right / claims if claims else math.nan,
        "most_frequent_claimed": top_claimed / repeaters if repeaters else math.nan,
        **({"rounds_with_sections": with_sections, "rounds_in_form": in_form} if sections else {}),
    }


def in_sections(text: str, headers: Sequence[str]) -> bool:
    """Whether `text` is laid out in the sections `headers` name: it opens with the first, the
    others follow in order, and each holds some text ("Frequent: gaming (3). Phase shifts: none."
    for ("Frequent:", "Phase shifts:"); "Frequent: 0:00 @home messaging" is not)."""
    text = text.strip()
    starts, at = [], 0
    for header in headers:
        start = text.find(header, at)
        if start < 0:
            return False
        starts.append(start)
        at = start + len(header)
    if not starts or starts[0] != 0:
        return False
    ends = starts[1:] + [len(text)]
    return all(text[s + len(h):e].strip(" .;,") for s, h, e in zip(starts, headers, ends))
