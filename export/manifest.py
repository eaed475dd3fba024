"""Writing a bundle's manifest.json (the reader, `bua.runtime.bundle`, defines the format)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from bua.events import DAY_ABBRS
from bua.fsio import write_bytes
from bua.runtime.bundle import DIGEST_KEY, FORMAT_VERSION, MANIFEST, manifest_digest, sha256_file

# How generated days are written and parsed (bua.textformat).
SERIALIZATION = {
    "name": "bua-event-lines",
    "version": 1,
    "line": "<day> <HH:MM> @<location> <behavior>",
    "days": list(DAY_ABBRS),
    "field_separator": " ",
    "line_separator": "\n",
    "notes": "one event per line; location names have no spaces, the behavior name is the rest "
    "of the line; no trailing newline",
}


def soft_token_spec(marker: str, projector_config: Mapping[str, Any], max_history: int, n_embd: int) -> dict[str, Any]:
    mode = str(projector_config["mode"])
    pooled = mode == "pooled"
    return {
        "marker": marker,
        "projector_mode": mode,
        "max_history": int(max_history),
        "n_soft_per_event": None if pooled else 1,
        "n_soft_fixed": int(projector_config["n_pooled_tokens"]) if pooled else None,
        "width": int(n_embd),
    }


def file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under root except the manifest, by relative path."""
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST:
            continue
        entries[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return entries


def write_manifest(root: Path, fields: Mapping[str, Any]) -> Path:
    """Hashes every file under root, then writes root/manifest.json atomically.

    fields: everything but format_version and files (backbone, quant, roles, vocab, ...).
    """
    manifest = {"format_version": FORMAT_VERSION, **fields, "files": file_entries(root)}
    missing = [rel for rel in manifest["roles"].values() if rel not in manifest["files"]]
    if missing:
        raise FileNotFoundError(f"bundle files {missing} named in roles were not written")
    manifest[DIGEST_KEY] = manifest_digest(manifest)
    path = root / MANIFEST
    write_bytes(path, (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return path
