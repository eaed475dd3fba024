"""The PyTorch/transformers side of comparison 1: the same checkpoint (backbone, encoder,
projector) in fp32 on the CPU, predicting with the project's own one-sequence inference
(`BUAModel.score_candidates`: the prompt on one KV cache, then every candidate on a copy).

The LM is the plain HF model (what the bundle's GGUF holds: no LoRA wrapper to slow it down).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np


class TorchPredictor:
    def __init__(self, backbone_dir: Path, encoder_dir: Path, projector_dir: Path, vocab, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from benchkit.artifacts import demo_template
        from bua.chat import ChatFormat
        from bua.dialogue import PREDICT, round_prompt_segments
        from bua.models.encoder import BehaviorEncoder
        from bua.models.projector import Projector, SoftTokenizer
        from bua.training.model import BUAModel

        torch.set_num_threads(threads)
        tokenizer = AutoTokenizer.from_pretrained(str(backbone_dir))
        lm = AutoModelForCausalLM.from_pretrained(str(backbone_dir), dtype=torch.float32).eval()
        chat = ChatFormat.from_tokenizer(tokenizer)
        template = demo_template()  # the bundles' layout
        soft = SoftTokenizer(BehaviorEncoder.load(encoder_dir), Projector.load(projector_dir))
        self.model = BUAModel(soft, lm, tokenizer, chat, template).eval()
        self.prompt = round_prompt_segments(template, chat, PREDICT, True)
        self.behaviors = list(vocab.behaviors)
        self.threads = threads

    def logprobs(self, events) -> np.ndarray:
        from bua.events import events_to_array

        return self.model.score_candidates(events_to_array(events), self.prompt, self.behaviors).numpy()

    def top(self, events, k: int = 5) -> list[str]:
        order = np.argsort(-self.logprobs(events), kind="stable")[:k]
        return [self.behaviors[i] for i in order]

    def breakdown(self, events, repeats: int) -> dict[str, float]:
        """Median ms of the prompt (encoder + projector + LM over the prompt) and of scoring."""
        from bua.events import events_to_array
        from bua.training.inference import InferenceSession

        prompt_ms, scoring_ms = [], []
        history = events_to_array(events)
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            session = InferenceSession(self.model)
            session.feed_segments(self.prompt, history)
            t1 = time.perf_counter()
            session.score(self.behaviors)
            t2 = time.perf_counter()
            prompt_ms.append(1e3 * (t1 - t0))
            scoring_ms.append(1e3 * (t2 - t1))
        return {"prompt_ms": float(np.median(prompt_ms)), "scoring_ms": float(np.median(scoring_ms)),
                "prompt_positions": session.n_past}


def top1(logps: Sequence[np.ndarray]) -> list[int]:
    return [int(np.argmax(x)) for x in logps]
