"""bua.fsio: what dead writers leave behind is cleaned up, only theirs."""
from __future__ import annotations

import os
import subprocess
import sys

from bua.fsio import new_temp_dir, remove_stale_temps, write_dir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    final = tmp_path / "bundle"
    dead, live = _dead_pid(), os.getppid()
    stale = [tmp_path / f".bundle.tmp-{dead}-ab12", tmp_path / f".bundle.work.tmp-{dead}-cd34"]
    for d in stale:
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "model.gguf").write_bytes(b"x" * 100)
    stale_file = tmp_path / f".bundle.tmp-{dead}-ef56"
    stale_file.write_bytes(b"half")
    kept = [tmp_path / f".bundle.tmp-{live}-gh78", tmp_path / f".other.tmp-{dead}-ij90", tmp_path / "bundle.tmp-1-x"]
    for d in kept:
        d.mkdir()
    assert sorted(remove_stale_temps(final)) == sorted(stale + [stale_file])
    assert all(d.exists() for d in kept) and not any(d.exists() for d in stale)


def test_a_new_writer_restores_name_old_and_cleans_up(tmp_path):
    final = tmp_path / "bundle"
    old = tmp_path / "bundle.old"  # a writer died between the two renames of commit_dir
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    leftover = tmp_path / f".bundle.tmp-{_dead_pid()}-zz"
    leftover.mkdir()
    tmp = new_temp_dir(final)
    assert (final / "manifest.json").is_file() and not old.exists() and not leftover.exists()
    assert tmp.name.startswith(f".bundle.tmp-{os.getpid()}-")
    tmp.rmdir()
    write_dir(final, lambda d: (d / "manifest.json").write_text('{"new": 1}'))
    assert (final / "manifest.json").read_text() == '{"new": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
