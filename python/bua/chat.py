"""`ChatFormat`: a chat template's turn structure as plain strings.

A conversation renders as

    bos + system_prefix + SYSTEM + system_suffix
        + user_prefix + USER_1 + user_suffix + assistant_prefix + ANSWER_1 + assistant_suffix
        + user_prefix + USER_2 + ...

and a prompt for the model's next answer stops after ``assistant_prefix``. `end_of_turn` is
the special token that ends an assistant turn (`assistant_suffix` starts with it).

`ChatFormat.from_tokenizer` derives the strings from an HF tokenizer's chat template by
rendering sentinel messages, then verifies that concatenation reproduces
``apply_chat_template`` exactly (with and without ``add_generation_prompt``) and that the
answer/suffix boundary cannot merge tokens. The result is stored in checkpoints and bundle
manifests, so the runtime rebuilds prompts without transformers.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

__all__ = ["ChatFormat", "ChatFormatError"]

FORMAT_VERSION = 1

# Sentinels: plain ASCII words that no template rewrites (strip, capitalize, ...).
_S = "QXSYSTEMQX"
_U1, _A1, _U2, _A2 = "QXUSERONEQX", "QXANSWERONEQX", "QXUSERTWOQX", "QXANSWERTWOQX"


class ChatFormatError(ValueError):
    """The tokenizer's chat template cannot be expressed as a `ChatFormat`."""


@dataclass(frozen=True)
class ChatFormat:
    bos: str
    system_prefix: str
    system_suffix: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    end_of_turn: str

    # ------------------------------------------------------------------ rendering
    def render(self, system: str, turns: list[tuple[str, str | None]]) -> str:
        """Renders (user, answer) turns; an answer of None ends with the assistant prefix
        (a generation prompt) and must be the last turn."""
        out = [self.bos, self.system_prefix, system, self.system_suffix]
        for i, (user, answer) in enumerate(turns):
            out += [self.user_prefix, user, self.user_suffix, self.assistant_prefix]
            if answer is None:
                if i != len(turns) - 1:
                    raise ValueError("only the last turn may lack an answer")
                break
            out += [answer, self.assistant_suffix]
        return "".join(out)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict:
        d = asdict(self)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ChatFormat":
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise ChatFormatError(f"chat format dict lacks {missing}")
        v = d.get("format_version", FORMAT_VERSION)
        if v != FORMAT_VERSION:
            raise ChatFormatError(f"unsupported chat format version {v} (this bua reads "
                                  f"{FORMAT_VERSION})")
        bad = [n for n in names if not isinstance(d[n], str)]
        if bad:
            raise ChatFormatError(f"chat format fields must be strings: {bad}")
        return cls(**{n: d[n] for n in names})

    @classmethod
    def chatml(cls) -> "ChatFormat":
        """ChatML (SmolLM2, Qwen2.5): ``<|im_start|>role\\n ... <|im_end|>\\n``."""
        return cls(
            bos="",
            system_prefix="<|im_start|>system\n",
            system_suffix="<|im_end|>\n",
            user_prefix="<|im_start|>user\n",
            user_suffix="<|im_end|>\n",
            assistant_prefix="<|im_start|>assistant\n",
            assistant_suffix="<|im_end|>\n",
            end_of_turn="<|im_end|>",
        )

    # ------------------------------------------------------------------ derivation
    @classmethod
    def from_tokenizer(cls, tokenizer) -> "ChatFormat":
        """Derives the format from an HF tokenizer (or a local checkpoint directory, loaded
        with transformers' AutoTokenizer) and its chat template (see module doc).

        Raises `ChatFormatError` when the template has no chat template, drops or rewrites
        the system message, renders turns inconsistently (e.g. the last assistant turn
        differently from earlier ones), or ends assistant turns without a special token.
        """
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer  # lazy: only the derivation needs it

            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        if not getattr(tokenizer, "chat_template", None):
            raise ChatFormatError("the tokenizer has no chat template")

        def render(messages, gen: bool) -> str:
            try:
                out = tokenizer.apply_chat_template(messages, tokenize=False,
                                                    add_generation_prompt=gen)
            except Exception as e:  # jinja raises for unsupported roles / orders
                raise ChatFormatError(f"apply_chat_template failed on a system/user/assistant "
                                      f"conversation: {e}") from e
            if not isinstance(out, str):
                raise ChatFormatError(f"apply_chat_template returned {type(out).__name__}, "
                                      f"expected str")
            return out

        def msgs(*contents):
            roles = ["system", "user", "assistant", "user", "assistant"]
            return [{"role": r, "content": c} for r, c in zip(roles, contents)]

        full = render(msgs(_S, _U1, _A1, _U2, _A2), False)
        for s in (_S, _U1, _A1, _U2, _A2):
            if full.count(s) != 1:
                raise ChatFormatError(f"the chat template does not render each message once "
                                      f"(sentinel {s!r} appears {full.count(s)} times): it may "
                                      f"drop the system message or rewrite contents")
        i_s, i_u1, i_a1 = full.index(_S), full.index(_U1), full.index(_A1)
        i_u2, i_a2 = full.index(_U2), full.index(_A2)
        if not i_s < i_u1 < i_a1 < i_u2 < i_a2:
            raise ChatFormatError("the chat template reorders messages")
        head = full[:i_s]
        sys_to_user = full[i_s + len(_S): i_u1]
        user_to_asst = full[i_u1 + len(_U1): i_a1]
        asst_to_user = full[i_a1 + len(_A1): i_u2]
        tail = full[i_a2 + len(_A2):]

        # end of an assistant turn: the final tail (e.g. "<|im_end|>\n")
        assistant_suffix = tail
        if not assistant_suffix or not asst_to_user.startswith(assistant_suffix):
            raise ChatFormatError(
                f"assistant turns end differently in the middle ({asst_to_user!r}) and at the "
                f"end ({tail!r}) of a conversation")
        user_prefix = asst_to_user[len(assistant_suffix):]
        if not user_prefix or not sys_to_user.endswith(user_prefix):
            raise ChatFormatError(f"cannot separate the user prefix: after the system message "
                                  f"{sys_to_user!r}, after an answer {asst_to_user!r}")
        system_suffix = sys_to_user[: len(sys_to_user) - len(user_prefix)]

        # user suffix vs assistant prefix: a conversation ending with a user turn
        sys_user = render(msgs(_S, _U1), False)
        if not sys_user.startswith(head + _S + sys_to_user + _U1):
            raise ChatFormatError("rendering system+user alone differs from the same turns in "
                                  "a longer conversation")
        user_suffix = sys_user[len(head + _S + sys_to_user + _U1):]
        if not user_to_asst.startswith(user_suffix):
            raise ChatFormatError(f"cannot separate the user suffix ({user_suffix!r}) from the "
                                  f"assistant prefix ({user_to_asst!r})")
        assistant_prefix = user_to_asst[len(user_suffix):]
        if not assistant_prefix:
            raise ChatFormatError("the chat template has an empty assistant prefix")

        # bos: only when the template itself writes the tokenizer's bos token
        bos_token = getattr(tokenizer, "bos_token", None) or ""
        template_src = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
        bos = ""
        if bos_token and head.startswith(bos_token) and "bos_token" in template_src:
            bos = bos_token
        system_prefix = head[len(bos):]

        special = _special_tokens(tokenizer)
        eot = max((t for t in special if assistant_suffix.startswith(t)), key=len, default=None)
        if eot is None:
            raise ChatFormatError(
                f"the assistant suffix {assistant_suffix!r} does not start with a special token "
                f"(known: {sorted(special)[:10]}): answers could merge with it when tokenized")

        fmt = cls(bos=bos, system_prefix=system_prefix, system_suffix=system_suffix,
                  user_prefix=user_prefix, user_suffix=user_suffix,
                  assistant_prefix=assistant_prefix, assistant_suffix=assistant_suffix,
                  end_of_turn=eot)
        fmt.verify(tokenizer)
        return fmt

    def verify(self, tokenizer) -> None:
        """Checks this format against the tokenizer's own chat template and tokenization."""
        system = "You read behavior histories."
        turns = [("First question?", "Answer one."), ("Second question, longer: a b c.",
                                                      "check weather"),
                 ("Third?", "Mon 08:10 @home check weather\nMon 09:00 @work email")]
        messages = [{"role": "system", "content": system}]
        for u, a in turns:
            messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        expect = tokenizer.apply_chat_template(messages, tokenize=False)
        got = self.render(system, turns)
        if got != expect:
            raise ChatFormatError(f"concatenated turns differ from apply_chat_template:\n"
                                  f"  ours:     {got!r}\n  template: {expect!r}")
        expect_gen = tokenizer.apply_chat_template(messages[:-1], tokenize=False,
                                                   add_generation_prompt=True)
        got_gen = self.render(system, turns[:-1] + [(turns[-1][0], None)])
        if got_gen != expect_gen:
            raise ChatFormatError(f"generation prompt differs from apply_chat_template:\n"
                                  f"  ours:     {got_gen!r}\n  template: {expect_gen!r}")

        def ids(text: str) -> list[int]:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])

        eot_ids = ids(self.end_of_turn)
        if len(eot_ids) != 1:
            raise ChatFormatError(f"end of turn {self.end_of_turn!r} is not a single token "
                                  f"({eot_ids})")
        for answer in ("check weather", "gaming", "Mon 08:10 @home alarm clock", "x."):
            if ids(answer + self.assistant_suffix) != ids(answer) + ids(self.assistant_suffix):
                raise ChatFormatError(f"tokenizing an answer with the assistant suffix "
                                      f"{self.assistant_suffix!r} merges tokens at the boundary")


def _special_tokens(tokenizer) -> set[str]:
    out = set(getattr(tokenizer, "all_special_tokens", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for tok in decoder.values():
        if getattr(tok, "special", False):
            out.add(str(tok.content) if hasattr(tok, "content") else str(tok))
    return {t for t in out if t}
