"""The models the suites benchmark, built once and cached under `Settings.cache`.

- encoder + projector: a fresh random-init behavior encoder (default size; tiny in smoke mode)
  and a per-event projector of the backbone's width (timings do not depend on weights).
- SmolLM2-135M-Instruct bundles, one per quant type (f16, q8_0, q5_k_m, q4_k_m), each a real
  `bua-export` bundle of the same backbone, encoder and projector, in the dialogue layout of the
  demo config (`demo_template`). Smoke mode: tiny-llama.
- a Qwen2.5-0.5B-shape bundle (q4_k_m) from a random checkpoint (`shapes`), whose HF directory
  is kept for the PyTorch side. Smoke mode: a tiny qwen2 with the same padded vocabulary.
- a Qwen2.5-1.5B-shape GGUF (q4_k_m only; the HF checkpoint and the f16 GGUF are deleted).

Every artifact is built in a temp path and renamed into place, so an interrupted build is
rebuilt on the next run. `ARTIFACT_VERSION` is part of every name: bump it when a recipe changes.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchkit.settings import Settings
from benchkit.shapes import QWEN25_05B, QWEN25_15B, TINY_QWEN_A, TINY_QWEN_B, Shape, build_random_checkpoint

ARTIFACT_VERSION = 1
SMOLLM2_KEY = "smollm2-135m"
QWEN05_KEY = "qwen2.5-0.5b-shape"
QWEN15_KEY = "qwen2.5-1.5b-shape"
TRAINED_KEY = "smollm2-135m-trained"


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _build_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Runs build(tmp) in a temp sibling of `final` and renames it into place."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(tmp)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@dataclass(frozen=True)
class ModelInfo:
    key: str
    label: str           # shown in the report
    backbone_dir: Path | None   # HF checkpoint (kept for the PyTorch side); None for a given bundle
    random_weights: bool


def dataset():
    """The simulated users whose vocabulary every bundle embeds and whose histories the suites use."""
    from bua.simulate import simulate

    return simulate(n_users=48, n_days=14, seed=11)


def encoder_dir(s: Settings) -> Path:
    from bua.models.encoder import BehaviorEncoder, EncoderConfig

    vocab = dataset().vocab
    size = "tiny" if s.smoke else "default"

    def build(out: Path) -> None:
        import torch

        torch.manual_seed(0)
        BehaviorEncoder(EncoderConfig.sized(size, vocab.n_behaviors, vocab.n_locations)).save(out)

    return _build_dir(s.cache / f"encoder-{size}-v{ARTIFACT_VERSION}", build)


def projector_dir(s: Settings, width: int) -> Path:
    from bua.models.encoder import BehaviorEncoder
    from bua.models.projector import Projector, ProjectorConfig

    enc = encoder_dir(s)

    def build(out: Path) -> None:
        import torch

        torch.manual_seed(1)
        d_model = BehaviorEncoder.load(enc).config.d_model
        Projector(ProjectorConfig(in_dim=d_model, out_dim=width)).save(out)

    return _build_dir(s.cache / f"projector-per_event-{width}-v{ARTIFACT_VERSION}", build)


def hf_width(hf_dir: Path) -> int:
    import json

    return int(json.loads((hf_dir / "config.json").read_text())["hidden_size"])


def _loadable(bundle: Path) -> bool:
    """A cached bundle this bua still reads, in the demo config's layout (a bundle of an older
    format or layout is exported again)."""
    from bua.runtime.bundle import DIGEST_KEY, BundleError, manifest_digest, read_manifest

    try:
        manifest = read_manifest(bundle)
    except BundleError:
        return False
    return (manifest.get(DIGEST_KEY) == manifest_digest(manifest)
            and manifest.get("dialogue_template") == demo_template().to_dict())


def demo_template():
    """The dialogue template of the config `bua demo` trains (its layout sets what a prediction
    and a streamed event evaluate)."""
    from bua.app.demo import DEFAULT_CONFIG, configs_dir
    from bua.training.config import load_config

    return load_config(configs_dir() / f"{DEFAULT_CONFIG}.yaml").data.template()


def export(s: Settings, backbone_dir: Path, name: str, quant: str, out: Path) -> Path:
    """A `bua-export` bundle of backbone_dir with the shared encoder and a projector of its width."""
    if out.exists():
        if _loadable(out):
            return out
        say(f"{out} was exported by an older bua; exporting it again")
        shutil.rmtree(out)
    from bua.chat import ChatFormat
    from bua.export.pipeline import export_bundle

    say(f"exporting {name} at {quant} -> {out}")
    export_bundle(backbone_dir, None, encoder_dir(s), projector_dir(s, hf_width(backbone_dir)),
                  dataset().vocab, ChatFormat.from_tokenizer(backbone_dir), demo_template(), out,
                  quant, backbone_name=name, check_parity=False, n_threads=s.threads,
                  progress=say)
    return out


def smollm2(s: Settings) -> ModelInfo:
    from bua.backbones import resolve_backbone

    if s.smoke:
        return ModelInfo(SMOLLM2_KEY, "tiny-llama (smoke stand-in for SmolLM2-135M)",
                         resolve_backbone("tiny-llama"), True)
    return ModelInfo(SMOLLM2_KEY, "SmolLM2-135M-Instruct", resolve_backbone("smollm2-135m-instruct"), False)


def trained_bundle(s: Settings) -> Path:
    """The trained bundle the run was given (`Settings.trained_bundle`), used as exported."""
    if s.trained_bundle is None:
        raise LookupError("no trained bundle given: pass --bench-trained-bundle DIR (e.g. runs/demo/<run>/bundle-q8_0)")
    return s.trained_bundle


def trained(s: Settings) -> ModelInfo:
    bundle = trained_bundle(s)
    return ModelInfo(TRAINED_KEY, f"SmolLM2-135M trained ({bundle.parent.name}/{bundle.name})", None, False)


def smollm2_bundle(s: Settings, quant: str = "q4_k_m") -> Path:
    info = smollm2(s)
    return export(s, info.backbone_dir, info.key, quant, s.cache / f"bundle-{info.key}-{quant}-v{ARTIFACT_VERSION}")


def shape_checkpoint(s: Settings, shape: Shape) -> Path:
    """A random HF checkpoint of `shape` with SmolLM2's tokenizer."""
    from bua.backbones import resolve_backbone

    def build(out: Path) -> None:
        say(f"random checkpoint {shape.name} ({shape.n_params / 1e6:.0f}M parameters)")
        build_random_checkpoint(shape, resolve_backbone("smollm2-135m-instruct"), out)

    return _build_dir(s.cache / f"hf-{shape.name}-v{ARTIFACT_VERSION}", build)


def qwen05(s: Settings) -> ModelInfo:
    shape = TINY_QWEN_A if s.smoke else QWEN25_05B
    label = f"{shape.name} (smoke stand-in for Qwen2.5-0.5B)" if s.smoke else "Qwen2.5-0.5B shape (random weights)"
    return ModelInfo(QWEN05_KEY, label, shape_checkpoint(s, shape), True)


def qwen05_bundle(s: Settings, quant: str = "q4_k_m") -> Path:
    info = qwen05(s)
    return export(s, info.backbone_dir, info.key, quant, s.cache / f"bundle-{info.key}-{quant}-v{ARTIFACT_VERSION}")


def qwen15_label(s: Settings) -> str:
    return f"{TINY_QWEN_B.name} (smoke stand-in for Qwen2.5-1.5B)" if s.smoke else "Qwen2.5-1.5B shape (random weights)"


def qwen15_gguf(s: Settings, quant: str = "q4_k_m") -> Path:
    """The 1.5B-shape GGUF alone (comparison 7): HF fp16 -> GGUF f16 -> quant, intermediates deleted."""
    shape = TINY_QWEN_B if s.smoke else QWEN25_15B
    final = s.cache / f"gguf-{QWEN15_KEY}-{quant}-v{ARTIFACT_VERSION}" / f"model-{quant}.gguf"
    if final.is_file():
        return final

    def build(out: Path) -> None:
        from bua.backbones import resolve_backbone
        from bua.export.gguf_convert import convert_hf_to_gguf
        from bua.export.quantize import quantize_gguf

        work = out / "work"
        say(f"random checkpoint {shape.name} ({shape.n_params / 1e6:.0f}M parameters)")
        build_random_checkpoint(shape, resolve_backbone("smollm2-135m-instruct"), work / "hf")
        say(f"converting {shape.name} to GGUF f16")
        convert_hf_to_gguf(work / "hf", work / "model-f16.gguf", "f16", name=QWEN15_KEY, progress=False)
        shutil.rmtree(work / "hf")
        say(f"quantizing {shape.name} to {quant}")
        quantize_gguf(work / "model-f16.gguf", out / final.name, quant, n_threads=s.threads)
        shutil.rmtree(work)

    _build_dir(final.parent, build)
    return final


def prepare_all(s: Settings) -> None:
    """Builds every artifact the suites use (what `report.py` runs before timing anything)."""
    for quant in s.quants:
        smollm2_bundle(s, quant)
    qwen05_bundle(s)
    qwen15_gguf(s)
