"""A byte-level BPE tokenizer (HF tokenizer.json) as GGUF tokenizer metadata for llama.cpp.

The tokenizer described is the one training uses: transformers' AutoTokenizer for the
checkpoint, serialized back to JSON. That can differ from the tokenizer.json on disk (with
transformers 5, a `qwen2` model_type gets Qwen2Tokenizer, which replaces the file's
pre-tokenizer with Qwen2's regex), so the file alone is not the truth.

llama.cpp re-implements each pre-tokenizer by name (`tokenizer.ggml.pre`). We recognise the
pre-tokenizer from the structure of the tokenizer's `pre_tokenizer` (not from a hash of token
ids), and only map the structures whose llama.cpp counterpart splits text the same way:

| tokenizer.json pre_tokenizer                                   | tokenizer.ggml.pre |
|----------------------------------------------------------------|--------------------|
| ByteLevel(use_regex=true)                                      | gpt-2              |
| Sequence[Digits(individual_digits=true), ByteLevel(use_regex)] | smollm             |
| Sequence[Split(Qwen2 regex), ByteLevel(use_regex=false)]       | qwen2              |
| Sequence[Split(Llama-3 regex), ByteLevel(use_regex=false)]     | llama-bpe          |

Anything else raises `ExportError` naming these. The tokens, their types (control tokens for
special added tokens), the merges, the special token ids, add-BOS/EOS (as the HF tokenizer
actually adds them) and the chat template are written as llama.cpp's own converter writes them
for gpt2-style BPE vocabularies.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from bua.export.errors import ExportError

# The Split regexes as they appear in the original tokenizer.json files.
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SUPPORTED_PRE_TOKENIZERS: dict[str, str] = {
    "gpt-2": "ByteLevel(use_regex=true) alone (GPT-2 regex)",
    "smollm": "Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)] (SmolLM/SmolLM2)",
    "qwen2": "Sequence[Split(Qwen2 regex), ByteLevel(use_regex=false)] (Qwen2, Qwen2.5)",
    "llama-bpe": "Sequence[Split(Llama-3 regex), ByteLevel(use_regex=false)] (Llama 3.x)",
}


@dataclass(frozen=True)
class BpeVocab:
    """What goes into the GGUF's tokenizer.ggml.* keys (special tokens come from SpecialVocab)."""

    tokens: list[str]
    token_types: list[int]
    pre: str
    n_control: int
    n_user_defined: int
    n_padding: int


def _supported_list() -> str:
    return "; ".join(f"{name!r}: {desc}" for name, desc in SUPPORTED_PRE_TOKENIZERS.items())


def _is_byte_level(step: dict[str, Any], use_regex: bool) -> bool:
    return (
        step.get("type") == "ByteLevel"
        and bool(step.get("use_regex", True)) == use_regex
        and not step.get("add_prefix_space", False)
    )


def _split_regex(step: dict[str, Any]) -> str | None:
    if step.get("type") != "Split" or step.get("invert", False):
        return None
    if step.get("behavior", "Isolated") != "Isolated":
        return None
    pattern = step.get("pattern", {})
    return pattern.get("Regex") if isinstance(pattern, dict) else None


def detect_pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """Returns llama.cpp's `tokenizer.ggml.pre` name for a tokenizer.json, or raises ExportError."""
    pre = tokenizer_json.get("pre_tokenizer")
    if isinstance(pre, dict):
        steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
        if len(steps) == 1 and _is_byte_level(steps[0], use_regex=True):
            return "gpt-2"
        if len(steps) == 2:
            first, second = steps
            if (
                first.get("type") == "Digits"
                and first.get("individual_digits", False)
                and _is_byte_level(second, use_regex=True)
            ):
                return "smollm"
            regex = _split_regex(first)
            if regex is not None and _is_byte_level(second, use_regex=False):
                if regex == QWEN2_REGEX:
                    return "qwen2"
                if regex == LLAMA3_REGEX:
                    return "llama-bpe"
    raise ExportError(
        f"unsupported tokenizer pre_tokenizer {json.dumps(pre)[:300]}: llama.cpp would split text "
        f"differently from the HF tokenizer. Supported pre-tokenizers: {_supported_list()}."
    )


def _looks_like_control(text: str) -> bool:
    return text.startswith("<|") and text.endswith("|>")


@dataclass(frozen=True)
class HFTokenizerInfo:
    """The effective HF tokenizer: its JSON serialization and what it adds around a text."""

    data: dict[str, Any]
    add_bos: bool
    add_eos: bool


def load_hf_tokenizer(hf_dir: Path) -> HFTokenizerInfo:
    """Loads hf_dir's tokenizer with AutoTokenizer (as training does) and serializes it."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(hf_dir))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load the tokenizer in {hf_dir}: {exc}") from exc
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(
            f"{hf_dir}: the tokenizer ({type(tok).__name__}) is not a fast tokenizers-backed one; "
            "bua-export needs a tokenizer.json"
        )
    plain = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    add_bos = tok.bos_token_id is not None and len(full) > len(plain) and full[0] == tok.bos_token_id
    add_eos = tok.eos_token_id is not None and len(full) > len(plain) and full[-1] == tok.eos_token_id
    return HFTokenizerInfo(json.loads(backend.to_str()), add_bos, add_eos)


def read_bpe_vocab(data: dict[str, Any], vocab_size: int, where: str = "tokenizer") -> BpeVocab:
    """Tokens, token types and the pre-tokenizer name from a tokenizer's JSON serialization.

    vocab_size is the model's embedding rows (config.json); ids the tokenizer lacks become
    unused `[PAD<id>]` tokens, as llama.cpp expects one token per embedding row.
    """
    model = data.get("model", {})
    if model.get("type") != "BPE" or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise ExportError(
            f"{where}: only byte-level BPE tokenizers are supported (GPT-2 style, as SmolLM2, Qwen2 "
            f"and Llama 3 use); found model {model.get('type')!r}, decoder "
            f"{(data.get('decoder') or {}).get('type')!r}"
        )
    normalizer = data.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        raise ExportError(f"{where}: normalizer {normalizer.get('type')!r} is not supported (only none or NFC)")
    pre = detect_pre_tokenizer(data)

    by_id: dict[int, str] = {i: tok for tok, i in model["vocab"].items()}
    added = {int(t["id"]): t for t in data.get("added_tokens", [])}
    top = max([*by_id, *added])
    if top >= vocab_size:
        raise ExportError(f"{where}: token id {top} does not fit the model's vocab_size {vocab_size}")

    tokens: list[str] = []
    types: list[int] = []
    counts = {"control": 0, "user": 0, "pad": 0}
    for i in range(vocab_size):
        if i in added:
            text = added[i]["content"]
            if added[i].get("special", False) or _looks_like_control(text):
                types.append(gguf.TokenType.CONTROL)
                counts["control"] += 1
            else:
                types.append(gguf.TokenType.USER_DEFINED)
                counts["user"] += 1
            tokens.append(text)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            counts["pad"] += 1
    return BpeVocab(tokens, types, pre, counts["control"], counts["user"], counts["pad"])


def _merges(data: dict[str, Any], where: str) -> list[str]:
    """BPE merges as GGUF stores them: "left right", a space inside a part written as U+0120."""
    merges = data.get("model", {}).get("merges") or []
    if not merges:
        raise ExportError(f"{where} has no BPE merges")
    if isinstance(merges[0], str):
        return list(merges)
    return [" ".join(part.replace(" ", chr(ord(" ") + 256)) for part in pair) for pair in merges]


def add_tokenizer(writer: gguf.GGUFWriter, hf_dir: Path, vocab_size: int) -> BpeVocab:
    """Writes the tokenizer keys (model, pre, tokens, types, merges, specials, chat template)."""
    info = load_hf_tokenizer(hf_dir)
    where = f"tokenizer of {hf_dir}"
    vocab = read_bpe_vocab(info.data, vocab_size, where)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    # Special token ids and the chat template from tokenizer_config.json / config.json; merges
    # and add-BOS/EOS from the effective tokenizer.
    special = gguf.SpecialVocab(hf_dir, load_merges=False, n_vocab=vocab_size)
    special.merges = _merges(info.data, where)
    special.add_special_token["bos"] = info.add_bos
    special.add_special_token["eos"] = info.add_eos
    special.add_to_gguf(writer, quiet=True)
    return vocab
