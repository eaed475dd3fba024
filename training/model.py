"""BUAModel: frozen behavior encoder + projector (the encoder engineer's `SoftTokenizer`) +
a causal LM with peft LoRA. Soft tokens enter through `inputs_embeds` at the dialogue's slot.

Freezing per stage follows sec. 3.3 exactly:

| stage  | encoder | projector | LLM base | LoRA  |
|--------|---------|-----------|----------|-------|
| stage1 | frozen  | trained   | frozen   | frozen (not used: B = 0) |
| stage2 | frozen  | trained   | frozen   | trained |
| stage3 | frozen  | frozen    | frozen   | trained |
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import torch
from torch import nn

from bua.chat import ChatFormat
from bua.dialogue import DialogueTemplate, Segment
from bua.models.projector import SoftTokenizer
from bua.training.collate import Batch
from bua.training.config import LoraSettings

STAGE_TRAINABLE: dict[str, tuple[str, ...]] = {
    "stage1": ("projector",),
    "stage2": ("projector", "lora"),
    "stage3": ("lora",),
}


class ForwardOutput(NamedTuple):
    """`nll[b, s]`: NLL of token s+1 of dialogue b in float32 (0 where it is not an answer token)."""

    nll: torch.Tensor  # [B, S-1]
    loss_rounds: torch.Tensor  # [B, S-1], aligned with nll (-1 outside answers)
    first_token_logits: torch.Tensor | None = None  # [B, P, G] at batch.predict_starts, when asked for


def cpu_has_bf16() -> bool:
    """This CPU runs bfloat16 matmuls natively (AVX512-BF16 or AMX-BF16; Linux /proc/cpuinfo)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_autocast(name: str, device: torch.device) -> bool:
    """Whether training forwards run under bfloat16 autocast (`model.autocast`)."""
    if name == "auto":
        return device.type == "cpu" and cpu_has_bf16()
    return name == "bf16"


def resolve_pad_multiple(n: int, device: torch.device) -> int:
    """`model.pad_to_multiple` for `device` (0: 64 on CUDA, 1 elsewhere)."""
    return n or (64 if device.type == "cuda" else 1)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


class BUAModel(nn.Module):
    """The trainable BUA model; see the module doc for the freezing table."""

    def __init__(self, soft_tokenizer: SoftTokenizer, lm: nn.Module, tokenizer, chat: ChatFormat,
                 template: DialogueTemplate) -> None:
        super().__init__()
        hidden = lm.get_input_embeddings().embedding_dim
        out_dim = soft_tokenizer.projector.config.out_dim
        if out_dim != hidden:
            raise ValueError(f"projector out_dim={out_dim} does not match the LLM hidden size {hidden}")
        self.soft_tokenizer = soft_tokenizer
        self.lm = lm
        self.tokenizer = tokenizer
        self.chat = chat
        self.template = template
        self.stage: str | None = None
        self.has_adapter = False  # True once LoRA holds trained (or loaded) weights
        self.autocast_bf16 = False  # training forwards under bfloat16 autocast (inference stays fp32)
        self.gradient_checkpointing = False  # the LM recomputes activations in backward
        self.soft_tokenizer.encoder.requires_grad_(False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(cls, backbone_dir: str | Path, soft_tokenizer: SoftTokenizer, lora: LoraSettings,
                      template: DialogueTemplate, *, dtype: str = "auto", device: str | torch.device = "cpu",
                      gradient_checkpointing: str = "auto", chat: ChatFormat | None = None,
                      adapter_dir: str | Path | None = None, autocast: str = "off") -> "BUAModel":
        """Loads the HF causal LM from a local directory and wraps it with a fresh LoRA
        (or the adapter in `adapter_dir`)."""
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = torch.device(device)
        torch_dtype = resolve_dtype(dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(str(backbone_dir))
        base = AutoModelForCausalLM.from_pretrained(str(backbone_dir), dtype=torch_dtype)
        base.config.use_cache = False
        checkpointing = gradient_checkpointing == "on" or (gradient_checkpointing == "auto" and device.type == "cuda")
        if checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if adapter_dir is not None:
            lm = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
        else:
            present = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
            missing = [m for m in lora.target_modules if m not in present]
            if missing:
                raise ValueError(f"model.lora.target_modules {missing} are not modules of {backbone_dir} "
                                 f"(linear layers there: {sorted(_linear_names(base))})")
            lm = get_peft_model(base, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=list(lora.target_modules), bias="none",
                                                 task_type="CAUSAL_LM"))
        if chat is None:
            chat = ChatFormat.from_tokenizer(tokenizer)
        model = cls(soft_tokenizer, lm, tokenizer, chat, template)
        model.has_adapter = adapter_dir is not None
        model.autocast_bf16 = resolve_autocast(autocast, device)
        model.gradient_checkpointing = checkpointing
        return model.to(device)

    # ------------------------------------------------------------------ stages
    def set_stage(self, stage: str) -> None:
        """Sets requires_grad per sec. 3.3 (module doc table)."""
        if stage not in STAGE_TRAINABLE:
            raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGE_TRAINABLE)}")
        trainable = STAGE_TRAINABLE[stage]
        self.requires_grad_(False)
        if "projector" in trainable:
            self.soft_tokenizer.projector.requires_grad_(True)
        if "lora" in trainable:
            for name, param in self.lm.named_parameters():
                if "lora_" in name:
                    param.requires_grad_(True)
        self.stage = stage

    def train(self, mode: bool = True) -> "BUAModel":
        super().train(mode)
        self.soft_tokenizer.encoder.eval()  # frozen: no dropout either
        return self

    def named_trainable(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def lora_state(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.lm.named_parameters() if "lora_" in n}

    @property
    def projector(self) -> nn.Module:
        return self.soft_tokenizer.projector

    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    @property
    def hidden_size(self) -> int:
        return self.lm.get_input_embeddings().embedding_dim

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    def lora_is_inert(self) -> bool:
        """This stage does not train LoRA (stage 1) and every LoRA B is still 0: its layers add
        exact zeros, so forwards skip them (on a CPU, LoRA's input dropout cost as much as the
        base layer's matmul). Not with gradient checkpointing: its recomputation in backward
        runs outside the forward and would take the LoRA path the forward skipped."""
        if (self.stage is None or "lora" in STAGE_TRAINABLE[self.stage] or self.gradient_checkpointing
                or not hasattr(self.lm, "disable_adapter")):
            return False
        return all(not p.any() for n, p in self.lm.named_parameters() if "lora_B" in n)

    @contextlib.contextmanager
    def _inert_lora_skipped(self):
        """Runs the enclosed forward without the LoRA layers when they are inert. peft's
        `disable_adapter` marks the adapter trainable again on exit; the stage's freezing is restored."""
        if not self.lora_is_inert():
            yield
            return
        flags = [(p, p.requires_grad) for p in self.lora_state().values()]
        try:
            with self.lm.disable_adapter():
                yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)

    def n_soft_tokens(self, n_events: int) -> int:
        """How many soft positions a history of `n_events` events takes in a dialogue."""
        config = self.soft_tokenizer.projector.config
        if config.mode == "pooled":
            return config.n_pooled_tokens if n_events > 0 else 0
        return n_events

    # ------------------------------------------------------------------ training forward
    def embed(self, input_ids: torch.Tensor, soft_positions: torch.Tensor, events: torch.Tensor,
              events_mask: torch.Tensor) -> torch.Tensor:
        """embed(tokens) with the projector's soft tokens written at `soft_positions` (row-major)."""
        embeds = self.lm.get_input_embeddings()(input_ids)
        soft, soft_mask = self.soft_tokenizer(events, events_mask)
        rows = soft[soft_mask]
        expected = soft_positions.sum(dim=1)
        got = soft_mask.sum(dim=1)
        if not torch.equal(expected.cpu(), got.cpu()):
            raise ValueError(f"soft slots per dialogue {expected.tolist()} differ from the soft tokens "
                             f"the projector produced {got.tolist()}")
        embeds = embeds.masked_scatter(soft_positions.unsqueeze(-1), rows.to(embeds.dtype))
        return embeds

    def forward(self, batch: Batch, first_ids: torch.Tensor | None = None) -> ForwardOutput:
        """Per-token NLL of the answer tokens; logits are computed only where a label exists.
        With `first_ids` [G], also the logits of those tokens as the first answer token of each
        `predict` round (`batch.predict_starts`; zeros where a row has fewer)."""
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16)
        with self._inert_lora_skipped(), autocast:
            embeds = self.embed(batch.input_ids, batch.soft_positions, batch.events, batch.events_mask)
            base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
            mask, positions = batch.attention_mask, batch.position_ids
            if batch.attention_4d is not None:
                mask = self._custom_mask(batch.attention_4d, embeds.dtype)
            hidden = base.get_decoder()(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                        use_cache=False).last_hidden_state
            labels = batch.labels[:, 1:]
            keep = labels != -100
            picked = hidden[:, :-1][keep]
            head = base.get_output_embeddings()
            logits = head(picked).float()
            first_logits = None
            if first_ids is not None:
                starts = batch.predict_starts.clamp(min=0)
                rows = hidden[torch.arange(len(starts), device=hidden.device).unsqueeze(1), starts]
                bias = head.bias[first_ids] if head.bias is not None else None
                first_logits = torch.nn.functional.linear(rows, head.weight[first_ids], bias).float()
                first_logits = first_logits * (batch.predict_starts >= 0).unsqueeze(-1)
        nll_kept = torch.nn.functional.cross_entropy(logits, labels[keep], reduction="none")
        nll = torch.zeros(labels.shape, dtype=torch.float32, device=hidden.device)
        nll = nll.masked_scatter(keep, nll_kept)
        return ForwardOutput(nll=nll, loss_rounds=batch.loss_rounds[:, 1:], first_token_logits=first_logits)

    def _custom_mask(self, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A [B, 1, S, S] may-attend mask in the form the LM's attention takes as given: boolean
        for SDPA, additive (0 / dtype min) for eager attention."""
        impl = getattr(self.lm.config, "_attn_implementation", "sdpa")
        if impl == "sdpa":
            return allowed
        if impl == "eager":
            return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
                ~allowed, torch.finfo(dtype).min)
        raise ValueError(f"dialogues with branches (stage2.prefix_predictions) need SDPA or eager "
                         f"attention; the LM uses {impl!r}")

    # ------------------------------------------------------------------ inference
    def score_candidates(self, history, prompt: Sequence[Segment], candidates: Sequence[str],
                         scoring: str = "constrained") -> torch.Tensor:
        """Log-probs [C] of `candidate + end_of_turn` as the answer to `prompt` (segments ending
        with the assistant prefix; the soft slot filled from `history`: int64 [L, 4] or a
        sequence of `bua.events.Event`), by a rule of `bua.dialogue.SCORING_RULES`."""
        from bua.training.inference import InferenceSession

        session = InferenceSession(self)
        session.feed_segments(prompt, history)
        return session.score(candidates, scoring)

    def generate_answer(self, history, prompt: Sequence[Segment], max_new_tokens: int = 256) -> str:
        """Greedy answer to `prompt` up to (not including) the end-of-turn token."""
        from bua.training.inference import InferenceSession

        session = InferenceSession(self)
        session.feed_segments(prompt, history)
        return session.greedy(max_new_tokens)


def _linear_names(model: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
