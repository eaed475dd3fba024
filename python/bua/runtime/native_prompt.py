"""The fast-path prediction prompt as a plain file for C++-only apps (cpp/examples/bua_predict).

An app without Python cannot render the chat template or read the manifest's JSON cheaply, so
the bundle carries `native/predict.prompt`: the prediction round's segments (text | soft |
text) and every candidate continuation, in the length-prefixed format documented in
cpp/examples/bua_predict.cpp. It is rendered by the same code as the Python runtime's prompt
(`bua.dialogue.round_prompt_segments`), so both paths feed llama.cpp identical tokens.
"""
from __future__ import annotations

from pathlib import Path

from bua.chat import ChatFormat
from bua.dialogue import PREDICT, DialogueTemplate, round_prompt_segments
from bua.vocab import Vocabulary

NATIVE_PROMPT = "native/predict.prompt"
VERSION = 1


def render_native_prompt(model_file: str, chat: ChatFormat, template: DialogueTemplate,
                         vocab: Vocabulary, n_ctx: int = 2048) -> bytes:
    if not model_file or any(c.isspace() for c in model_file):
        raise ValueError(f"GGUF file name must be non-empty without spaces, got {model_file!r}")
    out = [f"bua-native-prompt {VERSION}\n", f"model {model_file}\n", f"n_ctx {n_ctx}\n"]
    segments = round_prompt_segments(template, chat, PREDICT, True)
    out.append(f"segments {len(segments)}\n")
    body = [s.encode() for s in out]
    for seg in segments:
        if seg.kind == "soft":
            body.append(b"soft\n")
        else:
            text = seg.text.encode()
            body.append(b"text %d\n" % len(text) + text + b"\n")
    body.append(b"candidates %d\n" % vocab.n_behaviors)
    for name in vocab.behaviors:
        label, cont = name.encode(), (name + chat.end_of_turn).encode()
        body.append(b"%d %d\n" % (len(label), len(cont)) + label + cont + b"\n")
    return b"".join(body)


def write_native_prompt(bundle_dir: Path, model_file: str, chat: ChatFormat,
                        template: DialogueTemplate, vocab: Vocabulary, n_ctx: int = 2048) -> Path:
    """Writes BUNDLE/native/predict.prompt (the bundle writer hashes it with the rest)."""
    path = Path(bundle_dir) / NATIVE_PROMPT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_native_prompt(model_file, chat, template, vocab, n_ctx))
    return path
