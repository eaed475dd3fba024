"""Atomic file and directory writes: build beside the target, then rename into place."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to a temp file beside `path`, fsyncs, then renames over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def new_temp_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))


def commit_dir(tmp: Path, final: Path) -> None:
    """Moves a finished temp directory to `final`, replacing an older one.

    The old directory is first renamed to `final.old`; if the process dies between the two
    renames, `recover_dir(final)` restores it.
    """
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(final: Path) -> Path:
    """Restores `final` from `final.old` after a crash between the renames of `commit_dir`."""
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.exists():
        os.rename(old, final)
    return final


def write_dir(final: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Builds a directory with `build(tmp)` in a temp sibling, then commits it to `final`."""
    final = Path(final)
    tmp = new_temp_dir(final)
    try:
        build(tmp)
        commit_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
