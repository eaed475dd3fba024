"""Atomic file and directory output: build beside the target, then rename into place.

Readers never see a half-written checkpoint, bundle or report, and a crash never replaces a
good one: files go through `atomic_output` (temp file, fsync, rename), directories through
`write_dir` (temp directory, then `commit_dir`). Temp files are created private (0600/0700)
and get the umask's usual permissions when published. Temp names carry the writer's pid
(`.NAME.tmp-<pid>-<random>`), so the next writer of NAME removes those of dead processes only.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: Path) -> None:
    """Gives a temp file or directory (created 0600/0700) the umask's usual permissions."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temp path beside `path`; on success it is fsynced and renamed onto `path`, on
    failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        publish_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(final: Path) -> list[Path]:
    """Removes the temp files and directories of `final` (and of its `.work` sibling) that
    processes which have since died left behind; returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(final.name)}(\.work)?\.tmp-(\d+)-")
    removed = []
    if not final.parent.is_dir():
        return removed
    for entry in final.parent.iterdir():
        m = pattern.match(entry.name)
        if not m or int(m.group(2)) == os.getpid() or _alive(int(m.group(2))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def new_temp_dir(final: Path) -> Path:
    """A private temp directory beside `final`, after cleaning up what dead writers of `final`
    left: their temp directories, and a `final.old` whose replacement never arrived."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    recover_dir(final)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))


def commit_dir(tmp: Path, final: Path) -> None:
    """Moves a finished temp directory to `final`, replacing an older one.

    The old directory is first renamed to `final.old`; if the process dies between the two
    renames, `recover_dir(final)` restores it.
    """
    publish_mode(tmp)
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        recover_dir(final)
        raise
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
