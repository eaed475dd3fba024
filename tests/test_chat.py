"""bua.chat: ChatFormat from a real tokenizer's chat template."""
from __future__ import annotations

import json

import pytest

from bua.chat import ChatFormat, ChatFormatError


def test_chatml_constant_and_dict_roundtrip():
    c = ChatFormat.chatml()
    assert ChatFormat.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.render("S", [("U", "A"), ("V", None)]) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nV<|im_end|>\n"
        "<|im_start|>assistant\n")
    with pytest.raises(ChatFormatError, match="lacks"):
        ChatFormat.from_dict({"bos": ""})
    with pytest.raises(ValueError, match="only the last turn"):
        c.render("S", [("U", None), ("V", "A")])


def test_from_tokenizer_smollm2(smol_tok):
    c = ChatFormat.from_tokenizer(smol_tok)
    assert c == ChatFormat.chatml()
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "gaming"}]
    assert c.render("sys", [("hi", "gaming")]) == smol_tok.apply_chat_template(msgs, tokenize=False)
    c.verify(smol_tok)
    from bua.backbones import resolve_backbone

    assert ChatFormat.from_tokenizer(resolve_backbone("smollm2-135m-instruct")) == c


class _FakeTok:
    """Minimal tokenizer stand-in: a jinja-free chat template function."""

    def __init__(self, render, specials=("<eot>",), bos="<s>", template="{{ bos_token }}"):
        self._render = render
        self.chat_template = template
        self.all_special_tokens = list(specials)
        self.bos_token = bos

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return self._render(messages, add_generation_prompt)

    def __call__(self, text, add_special_tokens=False):
        # one id per special token, one per character otherwise
        out, i = [], 0
        while i < len(text):
            for s in self.all_special_tokens:
                if text.startswith(s, i):
                    out.append(1000 + self.all_special_tokens.index(s))
                    i += len(s)
                    break
            else:
                out.append(ord(text[i]))
                i += 1
        return {"input_ids": out}


def _llama3ish(messages, gen):
    out = "<s>"
    for m in messages:
        out += f"[{m['role']}]\n{m['content']}<eot>"
    if gen:
        out += "[assistant]\n"
    return out


def test_from_tokenizer_other_template_with_bos():
    c = ChatFormat.from_tokenizer(_FakeTok(_llama3ish))
    assert c.bos == "<s>" and c.system_prefix == "[system]\n" and c.system_suffix == "<eot>"
    assert c.user_prefix == "[user]\n" and c.user_suffix == "<eot>"
    assert c.assistant_prefix == "[assistant]\n" and c.assistant_suffix == "<eot>"
    assert c.end_of_turn == "<eot>"


def test_from_tokenizer_rejects_suffix_without_special_token():
    def render(messages, gen):
        return _llama3ish(messages, gen).replace("<eot>", "\n\n")
    with pytest.raises(ChatFormatError, match="does not start with a special token"):
        ChatFormat.from_tokenizer(_FakeTok(render))


def test_from_tokenizer_rejects_dropped_system():
    def render(messages, gen):
        return _llama3ish([m for m in messages if m["role"] != "system"], gen)
    with pytest.raises(ChatFormatError, match="drop the system message"):
        ChatFormat.from_tokenizer(_FakeTok(render))


def test_from_tokenizer_rejects_inconsistent_last_turn():
    def render(messages, gen):
        out = _llama3ish(messages, gen)
        return out + "<eos>" if messages[-1]["role"] == "assistant" else out
    with pytest.raises(ChatFormatError, match="end differently"):
        ChatFormat.from_tokenizer(_FakeTok(render, specials=("<eot>", "<eos>")))


def test_from_tokenizer_rejects_no_template():
    t = _FakeTok(_llama3ish)
    t.chat_template = None
    with pytest.raises(ChatFormatError, match="no chat template"):
        ChatFormat.from_tokenizer(t)
