"""Reading and verifying a bundle written by `bua-export` (numpy/json only: no torch).

```
BUNDLE/
  manifest.json            what is below, and sha256 + size of every other file
  model-<quant>.gguf       the merged LLM for llama.cpp
  encoder.onnx             events [batch, length, 4] + mask -> soft_tokens + soft_mask
  model-f16.gguf           (optional, --keep-f16) the unquantized reference GGUF
  native/predict.prompt    (optional) the prediction prompt for C++-only apps
```

`Bundle.load(path, verify=True)` checks the manifest's format version and the types and bounds
of its fields, that every listed file exists with its recorded size, and (verify=True) its
sha256 and the manifest's own digest (`manifest_sha256`); every problem raises
`BundleError` naming the file and what to do. The manifest's vocabularies, chat format and
dialogue template come back as the objects training used (`Vocabulary`, `ChatFormat`,
`DialogueTemplate`), so the runtime rebuilds the exact prompts.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from bua.chat import ChatFormat
from bua.dialogue import DialogueTemplate
from bua.vocab import Vocabulary

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# roles every bundle has, and optional ones
REQUIRED_ROLES = ("model", "encoder")
OPTIONAL_ROLES = ("reference_model", "native_prompt")
REQUIRED_KEYS = (
    "format_version",
    "backbone",
    "quant",
    "roles",
    "files",
    "vocab",
    "chat_format",
    "dialogue_template",
    "soft_tokens",
    "serialization",
    "encoder_io",
    "parity",
)


class BundleError(ValueError):
    """A bundle that is missing, incomplete, corrupt or from another format version."""


MAX_HISTORY_LIMIT = 4096  # no encoder bua builds reads longer histories
# Top-level manifest keys whose value must be a JSON object (the rest are checked one by one).
OBJECT_KEYS = ("backbone", "roles", "files", "vocab", "chat_format", "dialogue_template", "soft_tokens",
               "serialization", "encoder_io", "parity")
DIGEST_KEY = "manifest_sha256"


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces), its own digest left out:
    with the files' hashes it makes the whole bundle tamper-evident."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class BackboneInfo:
    arch: str      # llama.cpp architecture: "llama" or "qwen2"
    n_embd: int    # LLM hidden size = projector output width
    name: str


@dataclass(frozen=True)
class SoftTokenSpec:
    marker: str
    projector_mode: str              # "per_event", "pooled" or "item_emb"
    max_history: int                 # most events the encoder takes
    n_soft_per_event: int | None     # per_event / item_emb: 1 soft token per event
    n_soft_fixed: int | None         # pooled: this many soft tokens whatever the length
    width: int                       # = backbone n_embd

    def n_soft(self, n_events: int) -> int:
        """Soft tokens a history of n_events (1..max_history) yields."""
        if self.n_soft_fixed is not None:
            return self.n_soft_fixed
        return (self.n_soft_per_event or 1) * n_events


@dataclass(frozen=True)
class Bundle:
    path: Path
    format_version: int
    quant: str
    backbone: BackboneInfo
    vocab: Vocabulary
    chat_format: ChatFormat
    dialogue_template: DialogueTemplate
    soft_tokens: SoftTokenSpec
    serialization: dict[str, Any]
    encoder_io: dict[str, Any]
    parity: dict[str, Any]
    files: dict[str, FileEntry]        # relative path -> entry
    roles: dict[str, str]              # role -> relative path
    manifest: dict[str, Any]

    @property
    def gguf_path(self) -> Path:
        return self.path / self.roles["model"]

    @property
    def encoder_path(self) -> Path:
        return self.path / self.roles["encoder"]

    @property
    def reference_gguf_path(self) -> Path | None:
        rel = self.roles.get("reference_model")
        return self.path / rel if rel else None

    @property
    def native_prompt_path(self) -> Path | None:
        rel = self.roles.get("native_prompt")
        return self.path / rel if rel else None

    @property
    def n_embd(self) -> int:
        return self.backbone.n_embd

    @property
    def max_history(self) -> int:
        return self.soft_tokens.max_history

    @property
    def marker(self) -> str:
        return self.soft_tokens.marker

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify: bool = True) -> "Bundle":
        """Reads BUNDLE/manifest.json and checks the files (sha256 too when verify=True)."""
        root = Path(path)
        manifest = read_manifest(root)
        files = _check_files(root, manifest, verify)
        bundle = cls._from_manifest(root, manifest, files)
        if verify and manifest.get(DIGEST_KEY) != manifest_digest(manifest):
            raise BundleError(
                f"bundle {root}: {MANIFEST} was edited after export ("
                + ("it has no manifest_sha256" if manifest.get(DIGEST_KEY) is None else
                   "its content no longer matches manifest_sha256")
                + "); re-export the bundle, or load it with verify=False to accept the edit")
        return bundle

    @classmethod
    def _from_manifest(cls, root: Path, manifest: dict[str, Any], files: dict[str, FileEntry]) -> "Bundle":
        roles = dict(manifest["roles"])
        return cls(
            path=root,
            format_version=int(manifest["format_version"]),
            quant=str(manifest["quant"]),
            backbone=_backbone(root, manifest["backbone"]),
            vocab=_parse(root, "vocab", Vocabulary.from_dict, manifest["vocab"]),
            chat_format=_parse(root, "chat_format", ChatFormat.from_dict, manifest["chat_format"]),
            dialogue_template=_parse(
                root, "dialogue_template", DialogueTemplate.from_dict, manifest["dialogue_template"]
            ),
            soft_tokens=_soft_tokens(root, manifest["soft_tokens"]),
            serialization=dict(manifest["serialization"]),
            encoder_io=dict(manifest["encoder_io"]),
            parity=dict(manifest["parity"]),
            files=files,
            roles=roles,
            manifest=manifest,
        )


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest as a dict, with the format version and required keys checked."""
    if not root.is_dir():
        old = root.with_name(root.name + ".old")
        if old.is_dir():
            raise BundleError(f"bundle {root} does not exist, but {old} does: an export died while replacing "
                              f"it; the previous bundle is intact there (rename it back: mv {old} {root}), "
                              "or export again, which restores it first")
        raise BundleError(f"bundle {root} does not exist (write one with `bua-export`)")
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a bua bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is corrupt (not valid JSON: {exc}); re-export the bundle") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} is corrupt: expected a JSON object")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format_version {version!r}, but this bua reads version {FORMAT_VERSION}; "
            "re-export the bundle with this bua's `bua-export`"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{path} lacks {missing}; the bundle is incomplete, re-export it")
    _check_schema(path, manifest)
    return manifest


def _check_schema(path: Path, manifest: Mapping[str, Any]) -> None:
    """Types and bounds of the manifest's fields (what the loaders below would otherwise trip on)."""
    def bad(where: str, what: str, value: Any) -> BundleError:
        return BundleError(f"{path}: {where} must be {what}, got {value!r}; "
                           "the manifest is damaged, re-export the bundle")

    for key in OBJECT_KEYS:
        if not isinstance(manifest[key], dict):
            raise bad(f"'{key}'", "a JSON object", manifest[key])
    if not isinstance(manifest["quant"], str) or not manifest["quant"]:
        raise bad("'quant'", "a quantization name", manifest["quant"])
    for role, rel in manifest["roles"].items():
        if not isinstance(rel, str):
            raise bad(f"roles.{role}", "a file path", rel)
    for rel, info in manifest["files"].items():
        if not isinstance(info, dict):
            raise bad(f"files[{rel!r}]", "an object with sha256 and size", info)
        sha, size = info.get("sha256"), info.get("size")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise bad(f"files[{rel!r}].sha256", "64 hex digits", sha)
        if type(size) is not int or size < 0:
            raise bad(f"files[{rel!r}].size", "a byte count", size)
    history = manifest["soft_tokens"].get("max_history")
    if type(history) is not int or not 1 <= history <= MAX_HISTORY_LIMIT:
        raise bad("soft_tokens.max_history", f"a whole number from 1 to {MAX_HISTORY_LIMIT}", history)
    for key in ("n_embd",):
        value = manifest["backbone"].get(key)
        if type(value) is not int or value < 1:
            raise bad(f"backbone.{key}", "a positive whole number", value)
    digest = manifest.get(DIGEST_KEY)
    if digest is not None and not isinstance(digest, str):
        raise bad(f"'{DIGEST_KEY}'", "a sha256 hex string", digest)


def _check_files(root: Path, manifest: Mapping[str, Any], verify: bool) -> dict[str, FileEntry]:
    listed = manifest["files"]
    roles = manifest["roles"]
    for role in REQUIRED_ROLES:
        if role not in roles:
            raise BundleError(f"{root / MANIFEST}: no {role!r} file in 'roles'")
    for role, rel in roles.items():
        if role not in REQUIRED_ROLES + OPTIONAL_ROLES:
            raise BundleError(f"{root / MANIFEST}: unknown file role {role!r}")
        if rel not in listed:
            raise BundleError(f"{root / MANIFEST}: the {role} file {rel!r} has no sha256 entry")
    entries: dict[str, FileEntry] = {}
    for rel, info in listed.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(f"{root / MANIFEST}: file path {rel!r} leaves the bundle")
        path = root / rel
        if not path.is_file():
            raise BundleError(f"bundle {root}: {rel} is missing (listed in {MANIFEST}); re-export the bundle")
        size = path.stat().st_size
        if size != int(info["size"]):
            raise BundleError(
                f"bundle {root}: {rel} is {size} bytes but the manifest says {info['size']} "
                "(truncated or replaced); re-export the bundle"
            )
        if verify:
            digest = sha256_file(path)
            if digest != info["sha256"]:
                raise BundleError(
                    f"bundle {root}: {rel} is corrupt (sha256 {digest[:16]}... != manifest "
                    f"{str(info['sha256'])[:16]}...); re-export or re-copy the bundle"
                )
        entries[rel] = FileEntry(path, str(info["sha256"]), size)
    return entries


def _parse(root: Path, key: str, parse, value: Any):
    try:
        return parse(value)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # any malformed section
        raise BundleError(f"{root / MANIFEST}: invalid {key!r}: {exc}") from exc


def _backbone(root: Path, d: Mapping[str, Any]) -> BackboneInfo:
    try:
        return BackboneInfo(arch=str(d["arch"]), n_embd=int(d["n_embd"]), name=str(d["name"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{root / MANIFEST}: invalid 'backbone' ({exc})") from exc


def _soft_tokens(root: Path, d: Mapping[str, Any]) -> SoftTokenSpec:
    try:
        spec = SoftTokenSpec(
            marker=str(d["marker"]),
            projector_mode=str(d["projector_mode"]),
            max_history=int(d["max_history"]),
            n_soft_per_event=None if d.get("n_soft_per_event") is None else int(d["n_soft_per_event"]),
            n_soft_fixed=None if d.get("n_soft_fixed") is None else int(d["n_soft_fixed"]),
            width=int(d["width"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{root / MANIFEST}: invalid 'soft_tokens' ({exc})") from exc
    if (spec.n_soft_per_event is None) == (spec.n_soft_fixed is None):
        raise BundleError(f"{root / MANIFEST}: soft_tokens needs exactly one of n_soft_per_event, n_soft_fixed")
    return spec
