"""Does the GGUF behave like the HF model? Tokenization, logits and greedy decoding compared.

The HF side is transformers (fp32, CPU); the GGUF side is llama.cpp through `bua._native`, the
same path the on-device runtime uses. Tokenization follows the soft-token contract: each text
is tokenized on its own, HF with add_special_tokens=False, llama.cpp with add_special=False and
parse_special=True (control tokens such as <|im_end|> written in the text); the add-special
variant (BOS/EOS as the tokenizer adds them) is compared too.

Logit tolerance: max |logit_hf - logit_gguf| over every position and vocabulary entry, divided
by the logit scale max |logit_hf|. An f16 GGUF stays within F16_REL_TOL (we measure 1e-3 to
2e-3 on the tiny models and SmolLM2); a wrong permutation, tokenizer or norm gives O(1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# A wrong conversion moves logits by O(1) of their scale; f16 rounding by ~1e-3 on SmolLM2-135M
# (0.0016 on the demo's bundle) and up to ~2e-2 on the 2-layer random test model, whose
# logits are small (0.0185 once its training dialogues' question text changed).
F16_REL_TOL = 3e-2

# Texts shaped like what bua feeds the model: ChatML turns, behavior names, serialized event
# lines, multi-line text, digits, punctuation, repeated whitespace.
DEFAULT_TEXTS: tuple[str, ...] = (
    "<|im_start|>system\nYou are an assistant that understands a user's daily behavior.<|im_end|>\n"
    "<|im_start|>user\nHere is the user's recent history:\nMon 08:10 @home check weather\n"
    "Mon 08:45 @metro commute to work\nTue 12:30 @office have lunch\n"
    "What will the user do next?<|im_end|>\n<|im_start|>assistant\n",
    "check weather<|im_end|>\n",
    " go to the gym",
    "Sat 23:59 @bar drink coffee (2x), then... sleep!? 100% sure; 3.14 vs 3,000 #42",
    "Line one\n\nLine three\twith a tab  and  double  spaces \n  indented\n",
    "Wed 07:05 @home_2 brush-teeth; Thu 18:00 @café/restaurant \"dinner\" — 'ok'",
    "0123456789 10 100 1000 2024-05-17 12:00:00",
)


@dataclass(frozen=True)
class TokenMismatch:
    text: str
    add_special: bool
    hf: list[int]
    gguf: list[int]


@dataclass(frozen=True)
class TokenizationParity:
    n_texts: int
    n_tokens: int
    mismatches: list[TokenMismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


@dataclass(frozen=True)
class LogitsParity:
    n_positions: int
    max_abs_diff: float
    logit_scale: float     # max |hf logit|
    rel_diff: float        # max_abs_diff / logit_scale
    argmax_agreement: float

    def within(self, tol: float = F16_REL_TOL) -> bool:
        return self.rel_diff <= tol


@dataclass(frozen=True)
class GreedyParity:
    prompt: str
    hf_tokens: list[int]
    gguf_tokens: list[int]
    hf_text: str
    gguf_text: str

    @property
    def match(self) -> bool:
        return self.hf_tokens == self.gguf_tokens


class HFReference:
    """An HF checkpoint loaded once (fp32, eval mode) for the comparisons."""

    def __init__(self, hf_dir: str | Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.hf_dir = Path(hf_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.tensor([list(ids)])).logits[0].float().numpy()

    def greedy(self, ids: Sequence[int], max_new_tokens: int) -> list[int]:
        import torch

        eos = self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(
                torch.tensor([list(ids)]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos,
                pad_token_id=eos,
            )[0, len(ids):].tolist()
        return out[: out.index(eos)] if eos in out else out


def _native():
    from bua.runtime.native import load_native

    return load_native()


def load_gguf(path: str | Path) -> Any:
    return _native().Model.load(str(path))


def tokenization_parity(hf: HFReference, gguf_model: Any, texts: Sequence[str] = DEFAULT_TEXTS) -> TokenizationParity:
    mismatches: list[TokenMismatch] = []
    n_tokens = 0
    for text in texts:
        for add_special in (False, True):
            want = hf.tokenize(text, add_special)
            got = list(gguf_model.tokenize(text, add_special=add_special, parse_special=True))
            n_tokens += len(want)
            if want != got:
                mismatches.append(TokenMismatch(text, add_special, want, got))
    return TokenizationParity(len(texts), n_tokens, mismatches)


def logits_parity(
    hf: HFReference, gguf_model: Any, texts: Sequence[str] = DEFAULT_TEXTS[:2], n_threads: int = 1
) -> LogitsParity:
    """Compares next-token logits at every position of each text (tokenized by HF)."""
    native = _native()
    max_diff = scale = 0.0
    agree = total = 0
    for text in texts:
        ids = hf.tokenize(text)
        want = hf.logits(ids)
        session = native.Session(gguf_model, n_ctx=max(64, len(ids) + 8), n_threads=n_threads)
        for pos, token in enumerate(ids):
            session.eval_tokens([token])
            got = np.asarray(session.last_logits())
            max_diff = max(max_diff, float(np.abs(got - want[pos]).max()))
            scale = max(scale, float(np.abs(want[pos]).max()))
            agree += int(got.argmax() == want[pos].argmax())
            total += 1
    return LogitsParity(total, max_diff, scale, max_diff / scale if scale else 0.0, agree / total)


def greedy_parity(
    hf: HFReference, gguf_model: Any, prompt: str, max_new_tokens: int = 24, n_threads: int = 1
) -> GreedyParity:
    """Greedy continuation of `prompt` by both, stopping at the end of generation."""
    ids = hf.tokenize(prompt)
    want = hf.greedy(ids, max_new_tokens)
    for i, token in enumerate(want):  # llama.cpp stops at any end-of-generation token
        if gguf_model.is_end_of_generation(token):
            want = want[:i]
            break
    session = _native().Session(gguf_model, n_ctx=len(ids) + max_new_tokens + 16, n_threads=n_threads)
    session.eval_tokens(ids)
    got = list(session.generate(max_new_tokens)["tokens"])
    return GreedyParity(
        prompt=prompt,
        hf_tokens=want,
        gguf_tokens=got,
        hf_text=hf.tokenizer.decode(want),
        gguf_text=hf.tokenizer.decode(got),  # same vocabulary; tolerates partial UTF-8
    )


def as_json(obj: Any) -> dict[str, Any]:
    """A parity result as a JSON-ready dict (for the manifest)."""
    data = asdict(obj)
    for key in ("ok", "match"):
        if hasattr(obj, key):
            data[key] = getattr(obj, key)
    return data
