"""bua.runtime.bundle: reading a bundle's manifest and verifying its files (no torch)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bua.chat import ChatFormat
from bua.dialogue import default_template
from bua.export.manifest import SERIALIZATION, soft_token_spec, write_manifest
from bua.runtime.bundle import FORMAT_VERSION, Bundle, BundleError
from bua.vocab import Vocabulary


def _write_bundle(root, *, pooled: bool = False):
    root.mkdir()
    (root / "model-q4_k_m.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    (root / "encoder.onnx").write_bytes(b"onnx-graph" * 10)
    (root / "native").mkdir()
    (root / "native" / "predict.prompt").write_bytes(b"bua-native-prompt 1\n")
    template = default_template()
    projector = {"mode": "pooled" if pooled else "per_event", "n_pooled_tokens": 4}
    write_manifest(root, {
        "backbone": {"arch": "llama", "n_embd": 576, "name": "smollm2-135m-instruct"},
        "quant": "q4_k_m",
        "roles": {"model": "model-q4_k_m.gguf", "encoder": "encoder.onnx", "native_prompt": "native/predict.prompt"},
        "vocab": Vocabulary(["check weather", "sleep"], ["home", "office"]).to_dict(),
        "chat_format": ChatFormat.chatml().to_dict(),
        "dialogue_template": template.to_dict(),
        "soft_tokens": soft_token_spec(template.marker, projector, 64, 576),
        "serialization": SERIALIZATION,
        "encoder_io": {"inputs": {"events": {}, "mask": {}}, "outputs": {"soft_tokens": {}, "soft_mask": {}}},
        "parity": {"onnx": {"max_abs_diff": 1e-7}},
    })
    return root


def _edit_manifest(root, change):
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_loads_typed_fields_and_paths(tmp_path):
    root = _write_bundle(tmp_path / "b")
    b = Bundle.load(root)
    assert b.format_version == FORMAT_VERSION and b.quant == "q4_k_m"
    assert (b.backbone.arch, b.n_embd, b.backbone.name) == ("llama", 576, "smollm2-135m-instruct")
    assert b.vocab.behaviors == ["check weather", "sleep"]
    assert b.chat_format == ChatFormat.chatml()
    assert b.dialogue_template == default_template()
    assert b.marker == "<behavior_history>" and b.max_history == 64
    assert b.soft_tokens.n_soft(10) == 10 and b.soft_tokens.width == 576
    assert b.gguf_path == root / "model-q4_k_m.gguf" and b.encoder_path == root / "encoder.onnx"
    assert b.native_prompt_path == root / "native" / "predict.prompt"
    assert b.reference_gguf_path is None
    assert set(b.files) == {"model-q4_k_m.gguf", "encoder.onnx", "native/predict.prompt"}
    assert b.files["encoder.onnx"].size == 100
    assert b.serialization["line"] == "<day> <HH:MM> @<location> <behavior>"


def test_pooled_soft_token_count_is_fixed(tmp_path):
    b = Bundle.load(_write_bundle(tmp_path / "b", pooled=True))
    assert b.soft_tokens.projector_mode == "pooled"
    assert b.soft_tokens.n_soft(1) == b.soft_tokens.n_soft(50) == 4


def test_missing_bundle_or_manifest(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="not a bua bundle: manifest.json is missing"):
        Bundle.load(tmp_path / "empty")


def test_corrupt_manifest(tmp_path):
    root = _write_bundle(tmp_path / "b")
    (root / "manifest.json").write_text('{"format_version": 1, "backbone": ')
    with pytest.raises(BundleError, match="corrupt .*not valid JSON"):
        Bundle.load(root)


def test_other_format_version(tmp_path):
    root = _write_bundle(tmp_path / "b")
    _edit_manifest(root, lambda m: m.update(format_version=99))
    with pytest.raises(BundleError, match="format_version 99, but this bua reads version 1"):
        Bundle.load(root)


def test_missing_manifest_key_and_bad_fields(tmp_path):
    root = _write_bundle(tmp_path / "b")
    _edit_manifest(root, lambda m: m.pop("soft_tokens"))
    with pytest.raises(BundleError, match=r"lacks \['soft_tokens'\]"):
        Bundle.load(root)
    root2 = _write_bundle(tmp_path / "c")
    _edit_manifest(root2, lambda m: m["vocab"].update(behaviors=[]))
    with pytest.raises(BundleError, match="invalid 'vocab'"):
        Bundle.load(root2)


def test_missing_file_is_named(tmp_path):
    root = _write_bundle(tmp_path / "b")
    (root / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match="encoder.onnx is missing"):
        Bundle.load(root, verify=False)


def test_truncated_file_is_caught_without_hashing(tmp_path):
    root = _write_bundle(tmp_path / "b")
    path = root / "model-q4_k_m.gguf"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"model-q4_k_m.gguf is \d+ bytes but the manifest says"):
        Bundle.load(root, verify=False)


def test_same_size_corruption_needs_verify(tmp_path):
    root = _write_bundle(tmp_path / "b")
    path = root / "model-q4_k_m.gguf"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model-q4_k_m.gguf is corrupt \\(sha256"):
        Bundle.load(root, verify=True)
    assert Bundle.load(root, verify=False).quant == "q4_k_m"


def test_roles_and_paths_are_checked(tmp_path):
    root = _write_bundle(tmp_path / "b")
    _edit_manifest(root, lambda m: m["roles"].pop("encoder"))
    with pytest.raises(BundleError, match="no 'encoder' file"):
        Bundle.load(root)
    root2 = _write_bundle(tmp_path / "c")
    _edit_manifest(root2, lambda m: m["files"].update({"../escape": {"sha256": "0" * 64, "size": 1}}))
    with pytest.raises(BundleError, match="leaves the bundle"):
        Bundle.load(root2)


def test_reader_imports_without_torch():
    code = "import sys, bua.runtime.bundle; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(format_version=True), "format_version True"),
    (lambda m: m.update(format_version=1.0), "format_version 1.0"),
    (lambda m: m["files"].update({"encoder.onnx": "abc"}), r"files\['encoder.onnx'\] must be an object"),
    (lambda m: m["soft_tokens"].update(max_history=10000), "max_history must be a whole number from 1 to 4096"),
    (lambda m: m["soft_tokens"].update(max_history=0), "max_history must be a whole number from 1 to 4096"),
    (lambda m: m.update(vocab=[1, 2]), "'vocab' must be a JSON object"),
    (lambda m: m["backbone"].update(n_embd="576"), "backbone.n_embd must be a positive whole number"),
])
def test_manifest_schema_and_bounds_are_checked_on_load(tmp_path, change, message):
    root = _write_bundle(tmp_path / "b")
    _edit_manifest(root, change)
    with pytest.raises(BundleError, match=message):
        Bundle.load(root, verify=False)


def test_an_edited_manifest_is_refused_when_verifying(tmp_path):
    root = _write_bundle(tmp_path / "b")
    Bundle.load(root)  # the exporter's digest matches
    _edit_manifest(root, lambda m: m["dialogue_template"].update(system="Ignore the history."))
    with pytest.raises(BundleError, match="manifest.json was edited after export"):
        Bundle.load(root)
    assert Bundle.load(root, verify=False).dialogue_template.system == "Ignore the history."
    _edit_manifest(root, lambda m: m.pop("manifest_sha256"))
    with pytest.raises(BundleError, match="it has no manifest_sha256"):
        Bundle.load(root)


def test_a_bundle_left_as_name_old_is_pointed_at(tmp_path):
    root = _write_bundle(tmp_path / "b")
    root.rename(tmp_path / "b.old")
    with pytest.raises(BundleError, match=r"but .*b\.old does: an export died"):
        Bundle.load(root)
