"""`safe_write`: all or nothing, nothing beside the target, stale partial files of dead processes swept."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile

import pytest
from mambamim import safe_write as module
from mambamim.safe_write import safe_write, sweep_stale


@pytest.fixture
def staging(tmp_path, monkeypatch):
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path, staging):
    target = tmp_path / "out" / "labels.nii.gz"
    target.parent.mkdir()
    target.write_text("old")
    with pytest.raises(RuntimeError), safe_write(target) as tmp:
        assert tmp.name == target.name and not tmp.parent.samefile(target.parent)
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["labels.nii.gz"]
    assert list(staging.iterdir()) == []


def test_folder_replaces_folder(tmp_path, staging):
    target = tmp_path / "package"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with safe_write(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["package", "system-tmp"]


def test_across_file_systems_copies_under_a_hidden_name(tmp_path, staging, monkeypatch):
    seen = []
    monkeypatch.setattr(module, "same_file_system", lambda a, b: False)
    original = module._replace

    def spy(source, path):
        seen.append(source.name)
        original(source, path)

    monkeypatch.setattr(module, "_replace", spy)
    target = tmp_path / "labels.nii.gz"
    with safe_write(target) as tmp:
        tmp.write_text("data")
    assert target.read_text() == "data"
    assert seen and seen[0].startswith(".labels.nii.gz.mambamim-partial-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz", "system-tmp"]


def test_sweep_removes_only_dead_processes_partials(tmp_path, staging, caplog):
    dead = dead_pid()
    stale_copy = tmp_path / f".labels.nii.gz.mambamim-partial-{dead}-0a1b"
    stale_copy.write_text("partial")
    stale_dir = staging / f"mambamim-partial-{dead}-xyz"
    stale_dir.mkdir()
    live = staging / f"mambamim-partial-{os.getppid()}-abc"  # a running process (pytest's parent)
    live.mkdir()
    user_file = tmp_path / f"mambamim-partial-{dead}-mine.txt"  # not hidden: never ours to delete
    user_file.write_text("user")
    with caplog.at_level(logging.WARNING):
        removed = sweep_stale(tmp_path)
    assert set(removed) == {stale_copy, stale_dir}
    assert live.exists() and user_file.exists()
    assert sum("interrupted mambamim run" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.skipif(module.fcntl is None, reason="flock is POSIX-only")
def test_a_locked_staging_folder_is_never_swept(staging):
    """A writer in another PID namespace may carry a pid that looks dead here: its lock protects it."""
    dead = dead_pid()
    held, released = staging / f"mambamim-partial-{dead}-held", staging / f"mambamim-partial-{dead}-free"
    for folder in (held, released):
        folder.mkdir()
        (folder / ".lock").touch()
    fd = os.open(held / ".lock", os.O_RDONLY)
    module.fcntl.flock(fd, module.fcntl.LOCK_EX)
    try:
        assert sweep_stale(staging) == [released]
        assert held.exists()
    finally:
        os.close(fd)
