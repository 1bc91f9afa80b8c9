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


def test_the_package_renames_files_only_through_safe_write():
    """Every "write to a temporary file, then rename" is :func:`safe_write` (its cleanup is tested above)."""
    import ast
    from pathlib import Path

    package = Path(module.__file__).parent
    renames = []
    for path in package.rglob("*.py"):
        if path == Path(module.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                name = f"{owner.id}.{node.func.attr}" if isinstance(owner, ast.Name) else node.func.attr
                if name in ("os.replace", "os.rename", "shutil.move", "rename"):
                    renames.append(f"{path.relative_to(package)}:{node.lineno} {name}")
    assert not renames, renames


def test_a_failed_conversion_write_leaves_nothing(tmp_path, staging, monkeypatch):
    import safetensors.torch
    import torch
    from mambamim.infer.convert import Conversion, save_converted

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    conversion = Conversion({"w": torch.zeros(2)}, "hymamba", {}, "test")
    with pytest.raises(OSError, match="No space left"):
        save_converted(conversion, tmp_path / "out.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == [staging.name] and list(staging.iterdir()) == []
