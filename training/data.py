"""Curriculum data: events -> user split -> samples -> labelled dialogues -> tokenized examples.

Everything here is a pure function of the config (and its seeds), so every rank of a
distributed run, and a resumed run, builds exactly the same examples.

Per stage (dialogue builders from `bua.training.dialogues`, answers from `bua.labels.Labeler`):
- stage1: one single-round dialogue per prediction window, its task cycling through the
  stage's tasks (default: reconstruct, current/future scene, home/work, hobbies).
- stage2: multi-round dialogues key_behaviors -> patterns -> summary -> predict, or ending in
  generate (share `generation_fraction`); a share `direct_fraction` of both kinds is built with
  explain=False (the final round alone: the runtime's fast path, and what direct evaluation asks).
  With `prefix_predictions` K > 0 (a bua extension), each direct prediction dialogue of the
  training users also asks the question for K shorter prefixes of its history; the K + 1
  dialogues share the system prompt and the soft slot and are one example with branches
  (`bua.training.collate.Branch`), so one forward pass trains K + 1 answers. With
  `prediction_answers: encoder` (a bua extension), training prediction answers are the behavior
  encoder's most likely next behavior (`encoder_answers`) instead of the observed one. With
  `answer_balance` q > 0 (a bua extension), the training users' direct prediction dialogues draw
  their histories from all of a user's windows, each weighted by n_a^-q, n_a being how many
  training windows have the same answer a (`answer_weights`): rare answers are trained more often.
- stage3: self-reflective refinement dialogues.
User-level answers of training users come from their whole training log; validation and test
users are profiled from their sample window (the labeler never sees their logs).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from bua.dialogue import (
    GENERATE,
    PREDICT,
    STAGE1_TASKS,
    STAGE2_EXPLAIN_TASKS,
    STAGE3_TASKS,
    TokenizedDialogue,
    tokenize_segments,
)
from bua.events import Dataset, events_to_array
from bua.training.collate import Branch, Example
from bua.training.config import DataConfig, StageConfig
from bua.training.dialogues import Dialogue, stage1_dialogues, stage2_dialogue, stage3_dialogue

STAGE_TASKS = {"stage1": STAGE1_TASKS, "stage2": STAGE2_EXPLAIN_TASKS + (PREDICT, GENERATE), "stage3": STAGE3_TASKS}


@dataclass
class CurriculumData:
    """The dataset, its user split and the labeler built on the training users."""

    dataset: Dataset
    train: Dataset
    val: Dataset
    test: Dataset
    labeler: Any  # bua.labels.Labeler over the training users

    @property
    def vocab(self):
        return self.dataset.vocab


@dataclass
class StageExamples:
    train: list[Example]
    val: list[Example]
    dropped: int = 0  # dialogues longer than data.max_length
    counts: dict[str, int] = field(default_factory=dict)  # dialogues per final task / kind


def load_events(config: DataConfig) -> Dataset:
    """The event dataset the config names (simulator, Foursquare check-ins or a table)."""
    if config.source == "simulate":
        from bua.simulate import simulate

        return simulate(n_users=config.n_users, n_days=config.n_days, seed=config.seed)
    from bua import loaders

    if config.source == "foursquare":
        return loaders.load_foursquare(config.path)
    return loaders.load_table(config.path, loaders.parse_column_options(config.columns))


def prepare(config: DataConfig) -> CurriculumData:
    from bua.labels import LabelConfig, Labeler
    from bua.samples import split_users

    dataset = load_events(config)
    split = split_users(dataset, seed=config.seed)
    for name, part in zip(("train", "val", "test"), split):
        if len(part) == 0:
            raise ValueError(f"data: the 8:1:1 user split left no {name} users out of {len(dataset)}; "
                             "raise data.n_users (at least 3)")
    return CurriculumData(dataset, split.train, split.val, split.test,
                          Labeler(split.train, config=LabelConfig(user_profile=config.user_profile)))


@dataclass
class SharedPrefix:
    """Direct prediction dialogues whose histories are prefixes of the first one's: trained as
    one example with branches (see the module doc)."""

    dialogues: list[Dialogue]


def prefix_prediction_samples(sample, n: int, min_history: int, rng: np.random.Generator) -> list:
    """Up to `n` PredictionSamples for shorter prefixes of `sample.history` (at least
    `min_history` events), each targeting the event right after its prefix."""
    from bua.samples import PredictionSample

    cuts = list(range(max(1, min_history), len(sample.history)))
    if len(cuts) > n:
        cuts = sorted(rng.choice(cuts, size=n, replace=False).tolist())
    return [PredictionSample(sample.user_id, sample.history[:c], sample.history[c]) for c in cuts]


def encoder_answers(encoder) -> Callable[[Any], Any]:
    """sample -> the same PredictionSample whose target behavior is `encoder`'s most likely next
    behavior after the sample's history (the stage-2 `prediction_answers: encoder` teacher)."""
    def relabel(sample):
        behavior = int(teacher_answers(encoder, [sample])[0])
        return replace(sample, target=replace(sample.target, behavior=behavior))

    return relabel


def teacher_answers(encoder, samples: Sequence, batch_size: int = 1024) -> np.ndarray:
    """[len(samples)] the encoder's most likely next behavior after each sample's history."""
    from bua.models.pretrain import pad_windows
    from bua.training.distill import teacher_distribution

    device = str(next(encoder.parameters()).device)
    training = encoder.training
    encoder.eval()  # no dropout: the same answer on every rank and every resume
    try:
        out = []
        for i in range(0, len(samples), batch_size):
            events, mask = pad_windows([events_to_array(s.history) for s in samples[i:i + batch_size]], device)
            seen = mask.sum(dim=1, keepdim=True)
            teacher = teacher_distribution(encoder, events, mask, seen, temperature=1.0)
            out.append(teacher[:, 0].argmax(dim=-1).cpu().numpy())
    finally:
        encoder.train(training)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def observed_answers(samples: Sequence) -> np.ndarray:
    return np.array([s.target.behavior for s in samples], dtype=np.int64)


def answer_weights(answers: np.ndarray, q: float) -> np.ndarray:
    """Per window, n_a^-q: n_a = how many of `answers` equal this window's answer a (q = 0.5 is
    square-root class-balanced sampling; 0 = uniform)."""
    counts = np.bincount(answers)
    return counts[answers].astype(np.float64) ** -q


def _user_seed(seed: int, stage: str, user_id: str) -> int:
    return zlib.crc32(f"{seed}:{stage}:{user_id}".encode())


def stage_dialogues(data: CurriculumData, users: Dataset, stage: str, per_user: int, cfg: StageConfig,
                    dconfig: DataConfig, template, chat, prefixes: int = 0,
                    relabel: Callable[[Any], Any] | None = None,
                    answers_of: Callable[[Sequence], np.ndarray] | None = None) -> list[Dialogue | SharedPrefix]:
    """`per_user` dialogues of `stage` for every user in `users`; with `prefixes` > 0, stage 2's
    direct prediction dialogues come as `SharedPrefix` groups with that many shorter prefixes;
    `relabel` (e.g. `encoder_answers`) replaces the target of every stage-2 prediction sample;
    `answers_of` (samples -> their answers) with `cfg.answer_balance` > 0 draws the direct
    prediction histories weighted by their answers' rarity (`answer_weights`)."""
    from bua.samples import generation_samples, prediction_samples

    if per_user <= 0:
        return []
    tasks = tuple(cfg.tasks) or STAGE_TASKS[stage]
    unknown = [t for t in tasks if t not in STAGE_TASKS[stage]]
    if unknown:
        raise ValueError(f"{stage}.tasks {unknown} are not {stage} tasks; valid: {', '.join(STAGE_TASKS[stage])}")
    min_history = max(2, dconfig.history_len // 2)
    pools: dict[str, tuple[list, np.ndarray]] = {}
    if stage == "stage2" and answers_of is not None and cfg.answer_balance > 0:
        windows = {u.user_id: prediction_samples(u, dconfig.history_len, min_history=min_history) for u in users}
        weights = answer_weights(answers_of([s for w in windows.values() for s in w]), cfg.answer_balance)
        start = 0
        for user_id, w in windows.items():
            pools[user_id] = (w, weights[start:start + len(w)])
            start += len(w)
    out: list[Dialogue] = []
    for user in users:
        rng = np.random.default_rng(_user_seed(dconfig.seed, stage, user.user_id))
        if stage == "stage2":
            kinds = _stage2_kinds(per_user, cfg, rng)
            direct: list = []
            pool, weight = pools.get(user.user_id, ([], None))
            n_direct = min(len(pool), sum(1 for final, explain in kinds if final == PREDICT and not explain))
            if n_direct:
                picks = rng.choice(len(pool), size=n_direct, replace=False, p=weight / weight.sum())
                direct = [pool[i] for i in sorted(picks)]
            n_gen = sum(1 for final, _ in kinds if final == GENERATE)
            gen = generation_samples(user, dconfig.generation_history_len,
                                     min_history=min(dconfig.generation_history_len, min_history),
                                     max_per_user=n_gen) if n_gen else []
            n_pred = len(kinds) - min(n_gen, len(gen))
            preds = prediction_samples(user, dconfig.history_len, min_history=min_history, max_per_user=n_pred)
            pi = gi = 0
            for final, explain in kinds:
                if final == GENERATE and gi < len(gen):
                    sample, gi = gen[gi], gi + 1
                elif final == PREDICT and not explain and direct:
                    sample = direct.pop(0)
                elif pi < len(preds):  # also stands in for a generation sample the user lacks
                    sample, pi, final = preds[pi], pi + 1, PREDICT
                else:
                    continue
                if relabel is not None and final == PREDICT:
                    sample = relabel(sample)
                dialogue = stage2_dialogue(sample, data.labeler, final, explain, template=template, chat=chat)
                if prefixes and final == PREDICT and not explain:
                    shorter = prefix_prediction_samples(sample, prefixes, min_history, rng)
                    if relabel is not None:
                        shorter = [relabel(p) for p in shorter]
                    dialogue = SharedPrefix([dialogue] + [stage2_dialogue(p, data.labeler, PREDICT, False,
                                                                          template=template, chat=chat)
                                                          for p in shorter])
                out.append(dialogue)
            continue
        samples = prediction_samples(user, dconfig.history_len, min_history=min_history, max_per_user=per_user)
        offset = int(rng.integers(len(tasks)))
        for i, sample in enumerate(samples):
            if stage == "stage1":
                task = tasks[(i + offset) % len(tasks)]
                out += stage1_dialogues(sample, data.labeler, template=template, chat=chat, tasks=[task])
            else:
                out.append(stage3_dialogue(sample, data.labeler, template=template, chat=chat))
    return out


def _stage2_kinds(n: int, cfg: StageConfig, rng: np.random.Generator) -> list[tuple[str, bool]]:
    """`n` (final task, explain) pairs: generate with probability `generation_fraction`, else
    predict; explain=False (the final round alone) with probability `direct_fraction`."""
    out = []
    for _ in range(n):
        final = GENERATE if rng.random() < cfg.generation_fraction else PREDICT
        explain = not rng.random() < cfg.direct_fraction
        out.append((final, explain))
    return out


def to_examples(dialogues: Sequence[Dialogue | SharedPrefix], tokenizer, n_soft,
                max_length: int, opening_round: bool = False,
                closing_round: bool = False) -> tuple[list[Example], int]:
    """Tokenizes dialogues (each segment on its own); drops those longer than `max_length`;
    `opening_round` / `closing_round` give each generation answer's first / last line a round
    of its own."""
    cache: dict[str, list[int]] = {}
    newline = single_token_id(tokenizer, "\n") if opening_round or closing_round else -1
    out, dropped = [], 0
    for d in dialogues:
        if isinstance(d, SharedPrefix):
            example = shared_prefix_example(d, tokenizer, n_soft, cache)
        else:
            tokens = tokenize_segments(d.segments, tokenizer, n_soft=n_soft(len(d.history)), cache=cache)
            example = Example(tokens, events_to_array(d.history), tuple(d.tasks), d.user_id)
            if opening_round:
                example = opening_line_round(example, newline)
            if closing_round:
                example = closing_line_round(example, newline)
        if len(example) > max_length:
            dropped += 1
            continue
        out.append(example)
    return out, dropped


def single_token_id(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"the tokenizer writes {text!r} as {len(ids)} tokens {ids}; one was expected")
    return int(ids[0])


def _move_to_new_round(example: Example, newline_id: int, part) -> Example:
    """`example` with one piece of its `generate` answer moved to a new round of the same task,
    appended after the others. `part(breaks, length)`, given the offsets of the newline tokens in
    the answer's span and its length, returns the (start, end) offsets of the piece, or None."""
    t = example.tokens
    rounds = np.asarray(t.round_ids).copy()
    new_round = len(example.round_tasks)
    spans = []
    for r, task, a, b in t.spans:
        piece = part(np.flatnonzero(np.asarray(t.input_ids[a:b]) == newline_id), b - a) if task == GENERATE else None
        if piece is None:
            spans.append((r, task, a, b))
            continue
        lo, hi = a + piece[0], a + piece[1]
        rounds[lo:hi] = new_round
        spans += [s for s in ((r, task, a, lo), (new_round, task, lo, hi), (r, task, hi, b)) if s[2] < s[3]]
    if not any(s[0] == new_round for s in spans):
        return example
    tokens = TokenizedDialogue(t.input_ids, t.answer_mask, rounds, t.soft_start, t.n_soft, tuple(spans))
    return Example(tokens, example.events, example.round_tasks + (GENERATE,), example.user_id, example.branches)


def opening_line_round(example: Example, newline_id: int) -> Example:
    """`example` with the first line of its `generate` answer (up to and including the first
    `newline_id`) moved to a round of its own, appended after the others. Under the
    round-balanced loss that line, which sets the day's line format and first event (the later
    lines copy it), then weighs as much as a round instead of 1/T of one. A one-line answer
    moves whole (its newline is the chat suffix's), leaving its old round empty: the same loss.
    Examples without a `generate` answer come back unchanged."""
    return _move_to_new_round(example, newline_id,
                              lambda breaks, n: (0, int(breaks[0]) + 1) if breaks.size else None)


def closing_line_round(example: Example, newline_id: int) -> Example:
    """`example` with the last line of its `generate` answer, from the newline before it to the
    end of the turn (the chat suffix included), moved to a round of its own, appended after the
    others. The end of the turn is where the day ends: without the round, the end-of-turn token is
    one of ~300 in its round, and a model that has learned that times increase writes on past
    23:59 until the token limit. A span with one line (say the rest of a two-line answer after
    `opening_line_round`) stays. Examples without a `generate` answer come back unchanged."""
    # two newlines at least: the suffix's and the one before the last line
    return _move_to_new_round(example, newline_id,
                              lambda breaks, n: (int(breaks[-2]) + 1, n) if breaks.size >= 2 else None)


def shared_prefix_example(group: SharedPrefix, tokenizer, n_soft, cache: dict[str, list[int]]) -> Example:
    """One example with branches: the trunk is the first dialogue up to the end of its soft slot;
    branch k is dialogue k after its soft slot, seeing the trunk up to its own history's end."""
    first = group.dialogues[0]
    parts = [tokenize_segments(d.segments, tokenizer, n_soft=n_soft(len(d.history)), cache=cache)
             for d in group.dialogues]
    head = parts[0].input_ids[:parts[0].soft_start]
    trunk = parts[0].soft_start + parts[0].n_soft
    ids, answer, rounds = [parts[0].input_ids[:trunk]], [parts[0].answer_mask[:trunk]], [np.zeros(trunk, np.int64)]
    branches, spans, start = [], [], trunk
    for k, (d, t) in enumerate(zip(group.dialogues, parts)):
        if len(d.tasks) != 1 or d.history != first.history[:len(d.history)]:
            raise ValueError(f"user {first.user_id!r}: shared-prefix dialogues must be single-round with "
                             "histories that are prefixes of the first one's")
        if not np.array_equal(t.input_ids[:t.soft_start], head) or t.n_soft != len(d.history):
            raise ValueError(f"user {first.user_id!r}: shared-prefix dialogues need the same opening and one "
                             "soft token per event (projector mode per_event or item_emb)")
        end_soft = t.soft_start + t.n_soft
        tail = slice(end_soft, len(t))
        ids.append(t.input_ids[tail])
        answer.append(t.answer_mask[tail])
        rounds.append(np.full(len(t) - end_soft, k, np.int64))
        spans += [(k, task, a - end_soft + start, b - end_soft + start) for _, task, a, b in t.spans]
        branches.append(Branch(start, start + len(t) - end_soft, end_soft))
        start += len(t) - end_soft
    tokens = TokenizedDialogue(np.concatenate(ids), np.concatenate(answer), np.concatenate(rounds),
                               parts[0].soft_start, parts[0].n_soft, tuple(spans))
    tasks = tuple(d.tasks[0] for d in group.dialogues)
    return Example(tokens, events_to_array(first.history), tasks, first.user_id, tuple(branches))


def build_stage(data: CurriculumData, stage: str, cfg: StageConfig, dconfig: DataConfig, model) -> StageExamples:
    """Training and validation examples of one stage for `model` (its tokenizer, chat format,
    template and soft-token count)."""
    made = {}
    for split, users, per_user in (("train", data.train, cfg.train_samples_per_user),
                                   ("val", data.val, cfg.val_samples_per_user)):
        # Validation keeps one answer per dialogue, so its loss compares across settings.
        prefixes = cfg.prefix_predictions if split == "train" and stage == "stage2" else 0
        teacher = split == "train" and stage == "stage2" and cfg.prediction_answers == "encoder"
        encoder = model.soft_tokenizer.encoder
        relabel = encoder_answers(encoder) if teacher else None
        answers_of = None  # validation keeps its evenly spread windows
        if split == "train":
            answers_of = (lambda samples: teacher_answers(encoder, samples)) if teacher else observed_answers
        made[split] = stage_dialogues(data, users, stage, per_user, cfg, dconfig, model.template, model.chat,
                                      prefixes, relabel, answers_of)
    counts: dict[str, int] = {}
    for item in made["train"]:
        for d in (item.dialogues if isinstance(item, SharedPrefix) else [item]):
            key = d.tasks[-1] if stage != "stage2" else ("explain_" if len(d.tasks) > 1 else "direct_") + d.tasks[-1]
            counts[key] = counts.get(key, 0) + 1
    train, dropped_t = to_examples(made["train"], model.tokenizer, model.n_soft_tokens, dconfig.max_length,
                                   cfg.generation_opening_round, cfg.generation_closing_round)
    val, dropped_v = to_examples(made["val"], model.tokenizer, model.n_soft_tokens, dconfig.max_length)
    if not train:
        raise ValueError(f"{stage}: no training dialogues left (built {len(made['train'])}, {dropped_t} longer than "
                         f"data.max_length={dconfig.max_length})")
    return StageExamples(train, val, dropped_t + dropped_v, counts)
