"""Training configuration: one dataclass per component, loaded from YAML strictly.

Unknown keys are errors that list the valid ones; values of the wrong type are errors naming
the file, the dotted field and the value. Stage sections inherit the top-level `optimizer`
section key by key (a stage's own `optimizer:` overrides only the keys it names).
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from bua.dialogue import ALL_TASKS, DialogueTemplate, default_template

STAGES = ("stage1", "stage2", "stage3")


class ConfigError(ValueError):
    """A config file or mapping that does not fit the schema; the message names file and field."""


@dataclass
class DataConfig:
    """Where events come from and how samples and dialogues are cut from them."""

    source: Literal["simulate", "foursquare", "table"] = "simulate"
    path: Optional[str] = None  # foursquare directory or CSV/Parquet file (source != simulate)
    columns: list[str] = field(default_factory=list)  # table only: "FIELD=NAME" (bua.loaders.TableColumns)
    n_users: int = 40  # simulator only
    n_days: int = 14  # simulator only
    seed: int = 42  # simulator and sample selection
    history_len: int = 40  # events in a prediction history (the paper's L1)
    generation_history_len: int = 100  # events in a generation history (App. G.1)
    max_length: int = 1024  # tokens per dialogue after the soft slot is expanded; longer ones are dropped
    # where training users' user-level answers (home / work, hobbies, summary) are profiled from:
    # "log", their whole training log; "window", the dialogue's history, as for validation and
    # test users (a bua extension; training/README.md has its ablation)
    user_profile: Literal["log", "window"] = "log"
    # a bua extension: the first round's question before the behavior history instead of after
    # it, so the text after the soft slot is the same for every task and a streamed event costs
    # its soft row plus that short text (bua.dialogue.default_template; training/README.md)
    question_first: bool = False
    # a bua extension: only these tasks' first round asks first (e.g. [predict]: the prediction
    # dialogues, and so every fast-path prediction and stream, re-evaluate only the short text
    # after the history, while the understanding rounds keep the question after it)
    question_first_tasks: list[str] = field(default_factory=list)
    # a bua extension: these tasks' first round is the question alone in the user turn, and the
    # assistant's reply opens with the history; the answer follows the newline after it, so a
    # streamed event costs its soft row and one more position (training/README.md)
    history_in_reply_tasks: list[str] = field(default_factory=list)
    # a bua extension: the generate question ends with the history's behavior names, so the
    # model can copy the names it reads only as soft tokens into the day it writes
    generation_names: bool = False

    # the fields above that name tasks whose first round is laid out differently
    LAYOUT_TASK_FIELDS = ("question_first_tasks", "history_in_reply_tasks")

    def template(self) -> DialogueTemplate:
        """bua's dialogue template in this config's layout."""
        return default_template(self.question_first, self.question_first_tasks, self.history_in_reply_tasks,
                                self.generation_names)


@dataclass
class WarmStartSettings:
    """Projector warm start (a bua extension, not in the paper; training/README.md has its
    ablation): before the LLM's first forward pass, fit the fresh projector so that each soft
    token points like the LLM's own embedding of a behavior name. Skipped when every stage to
    train starts from a finished stage's projector (`--init-from`, `--resume` after stage 1)."""

    enabled: bool = False
    # which behavior a soft token is pointed at: "own", its event's behavior (a history reads
    # like the words of what the user did), or "next", the behavior that follows its event
    target: Literal["own", "next"] = "next"
    steps: int = 400  # Adam steps over encoder states of the training users (no LLM forward)
    batch_size: int = 64  # windows per step
    lr: float = 3.0e-3
    temperature: float = 0.07  # softmax over cosine similarities to the behavior names
    norm_weight: float = 1.0  # pulls soft-token norms to the mean norm of the LLM's token embeddings


@dataclass
class EncoderSettings:
    """The frozen behavior encoder (pretrained on next-event prediction) and the projector."""

    pretrained: Optional[str] = None  # an encoder directory to reuse; else pretrain into RUN_DIR/encoder
    size: Literal["tiny", "default", "large"] = "default"  # bua.models.encoder.SIZES
    pretrain_epochs: int = 30
    pretrain_batch_size: int = 32
    pretrain_lr: float = 1e-3
    pretrain_patience: int = 3
    pretrain_time_budget_s: Optional[float] = None
    projector_mode: Literal["per_event", "pooled", "item_emb"] = "per_event"  # item_emb: Table 4 ablation
    # which encoder states the projector reads: the paper's penultimate layer, or (a bua extension)
    # the final layer after its LayerNorm, which the encoder's next-behavior head reads
    projector_states: Literal["penultimate", "final"] = "penultimate"
    n_pooled_tokens: int = 4  # soft tokens in "pooled" mode
    projector_hidden: Optional[int] = None  # MLP width; None = LLM hidden size
    warm_start: WarmStartSettings = field(default_factory=WarmStartSettings)


@dataclass
class LoraSettings:
    """peft LoRA on the causal LM."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelConfig:
    """The causal LM backbone and how it runs."""

    backbone: str = "tiny-qwen2"  # resolve_backbone name or local HF directory
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"  # auto: on with CUDA
    # Training forwards under bfloat16 autocast. auto: on a CPU with AVX512-BF16 or AMX, off
    # elsewhere (AMD EPYC: SmolLM2 forward+backward 1.65x faster, a stage-2 step 1.2x; loss equal
    # to 2e-4 relative; training/README.md); evaluation and export stay fp32. CUDA runs bf16
    # weights already (dtype auto).
    autocast: Literal["auto", "off", "bf16"] = "auto"
    # Training batches are padded to a multiple of this many tokens. 0 = auto: 64 on CUDA, where
    # each new sequence length costs the attention a new cuDNN plan (hundreds of ms; an H200 step
    # of 0.5B took 0.84 s instead of 0.46 s: training/README.md, "GPU check"), 1 on a CPU.
    pad_to_multiple: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class OptimizerConfig:
    """AdamW with a cosine schedule and linear warm-up (App. F defaults)."""

    lr: float = 5e-5  # peak learning rate
    initial_lr: float = 1e-6  # learning rate at step 0 of the warm-up
    min_lr: float = 1e-6  # floor of the cosine decay
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping


@dataclass
class TaskWeightingConfig:
    """App. J dynamic task weighting: weights from EMA loss ratios, sharpened by alpha."""

    enabled: bool = False
    ema_decay: float = 0.9
    alpha: float = 1.0
    form: Literal["slower_up", "as_printed"] = "slower_up"  # see bua.training.task_weighting


@dataclass
class StageConfig:
    """One curriculum stage: its data budget, batch, schedule and loss."""

    enabled: bool = True
    epochs: float = 3.0
    max_steps: Optional[int] = None  # cap on optimizer steps (None: epochs decide)
    global_batch_size: int = 96  # dialogues per optimizer step over all ranks and micro-batches
    micro_batch_size: int = 4  # dialogues per forward pass on one rank (see micro_batch_overhead)
    # 0: a rank's dialogues of a step go through in micro-batches of micro_batch_size, longest
    # first. > 0: they are grouped by length instead (`collate.length_groups`): fewer padded
    # positions for more micro-batches, each costing about this many positions beyond its own; a
    # micro-batch then holds up to micro_batch_size x the rank's longest dialogue in padded
    # positions. The gradient is the same sum over the same dialogues either way
    micro_batch_overhead: int = 0
    train_samples_per_user: int = 8  # dialogues built per training user
    val_samples_per_user: int = 2  # dialogues built per validation user
    tasks: list[str] = field(default_factory=list)  # empty: the stage's default task set
    generation_fraction: float = 0.3  # stage 2: share of dialogues ending in generation (else prediction)
    direct_fraction: float = 0.2  # stage 2: share of explain=False dialogues (the final round alone)
    # stage 2, a bua extension: each direct prediction dialogue also answers for this many shorter
    # prefixes of its history in the same forward pass (shared opening and soft slot); 0 = off
    prefix_predictions: int = 0
    # stage 2, a bua extension: "encoder" replaces each training prediction answer by the behavior
    # encoder's most likely next behavior for that history (distillation: one consistent answer per
    # history instead of a noisy observed one); validation and evaluation keep the observed answers
    prediction_answers: Literal["observed", "encoder"] = "observed"
    # stage 2, a bua extension (long-tail re-sampling): the training users' direct prediction
    # dialogues draw their histories from all of a user's windows, each with weight n_a^-q, n_a
    # being how many training windows share its answer a (the encoder's with prediction_answers
    # "encoder", else the observed one); 0.5 is square-root sampling; 0 = evenly spread windows
    answer_balance: float = 0.0
    # stage 2, a bua extension (training/distill.py): weight of the KL divergence from the behavior
    # encoder's next-behavior distribution to the LLM's over the candidates' first answer tokens, at
    # each prediction round, added to the dialogue loss; 0 = off
    distill_weight: float = 0.0
    distill_temperature: float = 1.0  # softens (> 1) or sharpens (< 1) the encoder's distribution
    # stage 2, a bua extension (training/distill.py): logit adjustment for the long tail. Inside the
    # KL the student's first-token logits get tau x log(prior) added, the prior being how often
    # each first token's behaviors occur in the training users' logs, so the raw logits (what the
    # runtime scores) learn the teacher divided by prior^tau and rare behaviors move up; 0 = off
    # (tau 0.5 on the demo config did not lift Tail: training/README.md, "Fourteenth round")
    distill_prior_adjustment: float = 0.0
    # a bua extension: the share of the dialogues an epoch trains (its first steps) that are
    # prediction-only ones (direct, with their prefix branches) moved to its start, as far as
    # there are; the rest (understanding rounds, generation and the other direct dialogues)
    # follow in the shuffled order. 0 = shuffled; 1 = every direct dialogue first
    direct_first: float = 0.0
    # a bua extension: the share of the dialogues the epoch trains that are prediction-only ones,
    # taken from those direct_first leaves, moved to its end, so the read-out is the last thing
    # the stage trains; 0 = off. At 0.5 with prediction-only dialogues it broke the generated day
    # (training/README.md, "Thirty-first round"); with direct_last_days it did not ("Thirty-second")
    direct_last: float = 0.0
    # a bua extension: the end block (direct_last) also draws generation dialogues without
    # understanding rounds, in the shuffled order beside the prediction-only ones, so the day is
    # trained next to the read-out instead of unlearned by it; False = prediction-only
    direct_last_days: bool = False
    # stage 2, a bua extension: the first line of each training generation answer (up to its
    # newline) is a round of its own under the round-balanced loss, so the line that sets the
    # day's format and first event weighs as much as a prediction round instead of about 1/300
    # of the generation round (training/README.md, "Thirteenth round"); validation is unchanged
    generation_opening_round: bool = False
    # stage 2, a bua extension: the same for the last line and the end of the turn after it, where
    # the day ends (training/README.md, "Sixteenth round"); validation is unchanged
    generation_closing_round: bool = False
    # stage 2, a bua extension: multiplies the loss of every generation round (the opening line's
    # included) under either loss mode, on top of any App. J weight; 1 = off. A day is ~300 tokens
    # against a prediction's ~3, so under the round-balanced loss each of its tokens weighs about
    # 1/50 of a prediction token's (training/README.md, "Sixteenth round")
    generation_weight: float = 1.0
    # stage 2, a bua extension: the end-of-turn token of every training answer counts this many
    # times in its round's loss sum (the divisor stays the round's token count), so the one
    # decision that ends a day or a summary is not 1 of ~300 tokens; 1 = off
    # (training/README.md, "Seventeenth round")
    end_of_turn_weight: float = 1.0
    continue_from: Optional[Literal["stage1", "stage2"]] = None  # None: the latest finished earlier stage
    loss: Literal["round_balanced", "token"] = "round_balanced"
    task_weighting: TaskWeightingConfig = field(default_factory=TaskWeightingConfig)
    eval_every: int = 0  # optimizer steps between validations (0: once per epoch and at the end)
    save_every: int = 0  # optimizer steps between resumable checkpoints (0: with each validation)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)


@dataclass
class DistributedConfig:
    """How replicas cooperate under torchrun."""

    strategy: Literal["ddp"] = "ddp"  # LoRA + bf16 base: a 7B replica (15 GB) fits a 40 GB card, see README
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl with CUDA, else gloo
    find_unused_parameters: bool = False


@dataclass
class EvalConfig:
    """The report after training: Table 1 (prediction) and Table 2 (generation) metrics on the
    test users, BUA next to the baselines of `bua.models.baseline_eval` (same samples, same split)."""

    enabled: bool = True
    prediction_mode: Literal["direct", "explain"] = "direct"  # explain: generate rounds 1-3 first
    # how BUA scores each behavior name as the answer (bua.dialogue.SCORING_RULES); the demo's
    # on-device evaluation passes it to OnDevicePredictor(scoring=...)
    scoring: Literal["constrained", "summed"] = "constrained"
    test_per_user: int = 20  # natural test set: prediction samples per test user
    long_tail_per_class: int = 10  # class-balanced test set: samples per behavior
    generation_samples: int = 20  # test generation samples decoded (0: skip Table 2)
    max_new_tokens: int = 512  # cap for generated answers
    baselines: list[str] = field(default_factory=lambda: ["most-frequent", "markov", "SASRec", "behaveGPT"])
    baseline_train_per_user: int = 50
    baseline_val_per_user: int = 20
    baseline_time_budget_s: float = 180.0  # per trained baseline (SASRec, behaveGPT fine-tuning)


@dataclass
class TrainConfig:
    """Everything `python training/curriculum.py` needs."""

    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    stage3: StageConfig = field(default_factory=StageConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def stage(self, name: str) -> StageConfig:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> TrainConfig:
    """Reads a YAML config strictly; `overrides` maps dotted keys ("stage2.loss") to values."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> TrainConfig:
    """Builds a TrainConfig from a plain mapping (as YAML gives it), strictly."""
    raw = json.loads(json.dumps(raw))  # deep copy; also rejects non-plain values early
    top_opt = raw.get("optimizer", {})
    if not isinstance(top_opt, dict):
        raise ConfigError(f"{source}: field 'optimizer' must be a mapping, got {top_opt!r}")
    for name in STAGES:
        section = raw.get(name, {})
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: field {name!r} must be a mapping, got {section!r}")
        stage_opt = section.get("optimizer", {}) or {}
        if not isinstance(stage_opt, dict):
            raise ConfigError(f"{source}: field '{name}.optimizer' must be a mapping, got {stage_opt!r}")
        section["optimizer"] = {**top_opt, **stage_opt}
        raw[name] = section
    config = _build(TrainConfig, raw, source, "")
    _validate(config, source)
    return config


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: field {where!r} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(repr(prefix + k) for k in unknown)} in {where}; "
            f"valid keys: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, source, prefix + name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, source: str, dotted: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, dotted + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, dotted)
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{source}: field {dotted!r} = {value!r} is not one of {', '.join(repr(a) for a in args)}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: field {dotted!r} must be a list, got {value!r}")
        return [_coerce(args[0], v, source, f"{dotted}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: field {dotted!r} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: field {dotted!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML reads "5e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: field {dotted!r} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: field {dotted!r} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: field {dotted!r} has an unsupported type {hint!r}")


def _validate(config: TrainConfig, source: str) -> None:
    def fail(dotted: str, value: Any, why: str) -> None:
        raise ConfigError(f"{source}: field {dotted!r} = {value!r} {why}")

    if config.model.pad_to_multiple < 0:
        fail("model.pad_to_multiple", config.model.pad_to_multiple, "must be >= 0 (0: auto)")
    for key in DataConfig.LAYOUT_TASK_FIELDS:
        tasks = getattr(config.data, key)
        unknown = [t for t in tasks if t not in ALL_TASKS]
        if unknown:
            fail(f"data.{key}", tasks, f"names unknown tasks {unknown} (tasks: {', '.join(ALL_TASKS)})")
    if config.data.question_first and config.data.question_first_tasks:
        fail("data.question_first_tasks", config.data.question_first_tasks,
             "is redundant with data.question_first: true (every task asks first)")
    if config.data.question_first and config.data.history_in_reply_tasks:
        fail("data.history_in_reply_tasks", config.data.history_in_reply_tasks,
             "cannot be combined with data.question_first: true (that puts the question beside the history)")
    both = [t for t in config.data.history_in_reply_tasks if t in config.data.question_first_tasks]
    if both:
        fail("data.history_in_reply_tasks", config.data.history_in_reply_tasks,
             f"names tasks also in data.question_first_tasks: {both}")
    for name in STAGES:
        stage = config.stage(name)
        if stage.global_batch_size < 1:
            fail(f"{name}.global_batch_size", stage.global_batch_size, "must be at least 1")
        if stage.micro_batch_size < 1:
            fail(f"{name}.micro_batch_size", stage.micro_batch_size, "must be at least 1")
        if stage.micro_batch_overhead < 0:
            fail(f"{name}.micro_batch_overhead", stage.micro_batch_overhead, "must be 0 or positive")
        if stage.global_batch_size % stage.micro_batch_size:
            fail(f"{name}.global_batch_size", stage.global_batch_size,
                 f"must be a multiple of micro_batch_size ({stage.micro_batch_size})")
        if stage.epochs <= 0 and not stage.max_steps:
            fail(f"{name}.epochs", stage.epochs, "must be positive (or set max_steps)")
        if stage.max_steps is not None and stage.max_steps < 1:
            fail(f"{name}.max_steps", stage.max_steps, "must be at least 1 (or null)")
        for frac in ("generation_fraction", "direct_fraction"):
            value = getattr(stage, frac)
            if not 0.0 <= value <= 1.0:
                fail(f"{name}.{frac}", value, "must lie in [0, 1]")
        if stage.prefix_predictions < 0 or (stage.prefix_predictions and name != "stage2"):
            fail(f"{name}.prefix_predictions", stage.prefix_predictions,
                 "must be 0, or a positive count in stage2")
        if stage.prediction_answers not in ("observed", "encoder") or (
                stage.prediction_answers != "observed" and name != "stage2"):
            fail(f"{name}.prediction_answers", stage.prediction_answers,
                 "must be 'observed', or 'encoder' in stage2")
        if not 0.0 <= stage.answer_balance <= 1.0 or (stage.answer_balance and name != "stage2"):
            fail(f"{name}.answer_balance", stage.answer_balance, "must lie in [0, 1], and be 0 outside stage2")
        if stage.distill_weight < 0 or (stage.distill_weight and name != "stage2"):
            fail(f"{name}.distill_weight", stage.distill_weight, "must be 0, or a positive weight in stage2")
        for block in ("direct_first", "direct_last"):
            if not 0.0 <= getattr(stage, block) <= 1.0:
                fail(f"{name}.{block}", getattr(stage, block), "must lie in [0, 1]")
        if stage.direct_last_days and not stage.direct_last:
            fail(f"{name}.direct_last_days", stage.direct_last_days, f"needs {name}.direct_last > 0")
        if stage.direct_first + stage.direct_last > 1.0:
            fail(f"{name}.direct_last", stage.direct_last,
                 f"plus {name}.direct_first ({stage.direct_first}) must not exceed 1")
        for switch in ("generation_opening_round", "generation_closing_round"):
            if getattr(stage, switch) and name != "stage2":
                fail(f"{name}.{switch}", getattr(stage, switch), "applies to stage2 only")
        for multiplier in ("generation_weight", "end_of_turn_weight"):
            value = getattr(stage, multiplier)
            if value <= 0 or (value != 1.0 and name != "stage2"):
                fail(f"{name}.{multiplier}", value, "must be positive, and 1 outside stage2")
        if stage.distill_temperature <= 0:
            fail(f"{name}.distill_temperature", stage.distill_temperature, "must be positive")
        if stage.distill_prior_adjustment < 0 or (stage.distill_prior_adjustment and not stage.distill_weight):
            fail(f"{name}.distill_prior_adjustment", stage.distill_prior_adjustment,
                 "must be 0, or a positive tau with a distill_weight")
        if stage.continue_from is not None and STAGES.index(stage.continue_from) >= STAGES.index(name):
            fail(f"{name}.continue_from", stage.continue_from, "must name an earlier stage")
        opt = stage.optimizer
        if not 0.0 <= opt.warmup_ratio < 1.0:
            fail(f"{name}.optimizer.warmup_ratio", opt.warmup_ratio, "must lie in [0, 1)")
        if opt.lr <= 0 or opt.min_lr < 0 or opt.initial_lr < 0:
            fail(f"{name}.optimizer.lr", opt.lr, "and initial_lr/min_lr must be positive")
        if opt.min_lr > opt.lr:
            fail(f"{name}.optimizer.min_lr", opt.min_lr, f"must not exceed lr ({opt.lr})")
        if len(opt.betas) != 2:
            fail(f"{name}.optimizer.betas", opt.betas, "must hold two numbers")
        tw = stage.task_weighting
        if not 0.0 <= tw.ema_decay < 1.0:
            fail(f"{name}.task_weighting.ema_decay", tw.ema_decay, "must lie in [0, 1)")
    if config.data.source != "simulate" and not config.data.path:
        fail("data.path", config.data.path, f"must be set when data.source is {config.data.source!r}")
    if config.model.lora.r < 1:
        fail("model.lora.r", config.model.lora.r, "must be at least 1")
