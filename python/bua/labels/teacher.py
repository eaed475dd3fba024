"""Optional teacher hook: an external LLM rephrases the computed answers (off by default).

The labels are computed from the data; a teacher only rewrites their wording, so the facts
stay those of the data. Anything with a ``rephrase(task, answer, context) -> str`` method is
a teacher. Two are provided, neither adding a dependency:

- `LlamaCppTeacher`: a local GGUF through `llama_cpp.Llama` (llama-cpp-python, already a
  bua dependency), imported when the teacher is created;
- `OpenAITeacher`: any OpenAI-compatible ``/v1/chat/completions`` endpoint over urllib.

`Labeler(..., teacher=...)` calls the teacher for the tasks in ``LabelConfig.teacher_tasks``
(never for reconstruction, prediction or generation, whose answers must stay exact), caches
the result per (task, answer), and keeps the computed answer when the teacher fails or
returns something unusable (empty, too long, or with a line the answer did not have).
"""
from __future__ import annotations

import json
import urllib.request
from typing import Protocol, runtime_checkable

__all__ = ["LlamaCppTeacher", "OpenAITeacher", "Teacher", "rephrase_prompt"]

_SYSTEM = ("You rewrite short statements about a user's daily behavior. Keep every fact, "
           "name, time and '@place' exactly; change only the wording. Reply with the "
           "rewritten text only, at most as long as the original.")


@runtime_checkable
class Teacher(Protocol):
    def rephrase(self, task: str, answer: str, context: dict) -> str: ...


def rephrase_prompt(task: str, answer: str, context: dict) -> list[dict]:
    """Chat messages asking a teacher to reword `answer` of `task`."""
    hint = context.get("question", "")
    user = f"Task: {task}\n" + (f"Question: {hint}\n" if hint else "") + f"Statement: {answer}"
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


class LlamaCppTeacher:
    """A local GGUF model as teacher (llama-cpp-python)."""

    def __init__(self, model_path: str, *, n_ctx: int = 2048, temperature: float = 0.3,
                 max_tokens: int = 256, seed: int = 0, **llama_kwargs):
        from llama_cpp import Llama  # lazy: only when a teacher is asked for

        self.llm = Llama(model_path=str(model_path), n_ctx=n_ctx, seed=seed, verbose=False,
                         **llama_kwargs)
        self.temperature = temperature
        self.max_tokens = max_tokens

    def rephrase(self, task: str, answer: str, context: dict) -> str:
        out = self.llm.create_chat_completion(messages=rephrase_prompt(task, answer, context),
                                              temperature=self.temperature,
                                              max_tokens=self.max_tokens)
        return out["choices"][0]["message"]["content"]


class OpenAITeacher:
    """An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, ...)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 temperature: float = 0.3, max_tokens: int = 256, timeout: float = 60.0):
        self.url = base_url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions" if self.url.endswith("/v1") else \
                "/v1/chat/completions"
        self.model = model
        self.api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout

    def request(self, task: str, answer: str, context: dict) -> urllib.request.Request:
        body = json.dumps({"model": self.model,
                           "messages": rephrase_prompt(task, answer, context),
                           "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

    def rephrase(self, task: str, answer: str, context: dict) -> str:
        with urllib.request.urlopen(self.request(task, answer, context),
                                    timeout=self.timeout) as r:
            data = json.loads(r.read().decode())
        return data["choices"][0]["message"]["content"]
