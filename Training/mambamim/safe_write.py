"""Write every output through one door: a temporary path away from the user's files, then a rename.

``with safe_write(path) as tmp:`` yields a path with ``path``'s own file name (so writers that pick a
format by suffix, like ITK and matplotlib, still do) inside a private staging folder named
``mambamim-partial-<pid>-*`` in the system temporary folder (``TMPDIR``). When the block ends without
an exception the result gets the permissions the user's umask allows (like any file they create) and is
renamed onto ``path``; on an exception, Ctrl-C or cancellation the staging folder is removed and
``path`` is untouched. A reader therefore only ever sees no file or the whole file.

When ``path`` is on another file system than the temporary folder, a rename cannot cross it: the
result is copied next to ``path`` under a hidden name that no image reader accepts
(``.<name>.mambamim-partial-<pid>-*``) and renamed from there. A process killed outright (SIGKILL, power
loss) cannot clean up, so every ``safe_write`` first sweeps staging entries of *dead* processes (in the
temporary folder and in the target folder), saying what it removed. A staging folder's owner holds an
exclusive ``flock`` on its ``.lock`` file, which the kernel releases when the process dies however it
dies, so a live writer is never swept, even one in another PID namespace sharing the folder; where
``flock`` does not exist (Windows) the process id decides.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

logger = logging.getLogger(__name__)

STAGING_PREFIX = "mambamim-partial-"
# Staging folders in the temp folder, and hidden copies / moved-aside folders beside a target.
_STAGING_NAME = re.compile(r"^mambamim-partial-(\d+)-")
_HIDDEN_NAME = re.compile(r"^\..+\.mambamim-partial-(\d+)-")
_LOCK_FILE = ".lock"


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (and, for a folder, everything in it) the mode a plain ``open``/``mkdir`` would."""
    umask = current_umask()
    path = Path(path)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(Path(root) / name, 0o777 & ~umask)
            for name in files:
                os.chmod(Path(root) / name, 0o666 & ~umask)
        os.chmod(path, 0o777 & ~umask)
    else:
        os.chmod(path, 0o666 & ~umask)


@contextmanager
def safe_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for ``path`` (a file or a folder); publish it atomically on success.

    The caller writes a file or creates a folder at the yielded path; an existing ``path`` is replaced
    (callers check ``overwrite`` themselves, before any work).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))
    lock = _hold_lock(staging)
    try:
        tmp = staging / path.name
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written for {path}")
        apply_umask(tmp)
        _move_into_place(tmp, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def _hold_lock(staging: Path) -> int | None:
    """An exclusive lock on ``staging/.lock`` for as long as the returned descriptor is open."""
    if fcntl is None:
        return None
    fd = os.open(staging / _LOCK_FILE, os.O_CREAT | os.O_WRONLY, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _owner_alive(entry: Path, pid: int) -> bool:
    """Whether the writer of a staging entry may still run: a held lock says so (a writer in another PID
    namespace), and so does a live pid (a writer that has created its folder but not yet locked it)."""
    lock = entry / _LOCK_FILE
    if fcntl is not None and lock.is_file():
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            return True  # someone else's: leave it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True  # held: the writer is alive
        finally:
            os.close(fd)
    return pid == os.getpid() or psutil.pid_exists(pid)


def same_file_system(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def _move_into_place(tmp: Path, path: Path) -> None:
    if same_file_system(tmp.parent, path.parent):
        _replace(tmp, path)
        return
    # Another file system: copy beside the target under a hidden name no reader takes for a result.
    hidden = path.with_name(f".{path.name}.{STAGING_PREFIX}{os.getpid()}-{os.urandom(4).hex()}")
    try:
        if tmp.is_dir():
            shutil.copytree(tmp, hidden)
        else:
            shutil.copy2(tmp, hidden)
        _replace(hidden, path)
    finally:
        if hidden.is_dir():
            shutil.rmtree(hidden, ignore_errors=True)
        else:
            hidden.unlink(missing_ok=True)


def _replace(source: Path, path: Path) -> None:
    """``os.replace``, also for a folder replacing an existing folder (moved aside, then deleted)."""
    if source.is_dir() and path.is_dir():
        old = path.with_name(f".{path.name}.{STAGING_PREFIX}{os.getpid()}-old")
        os.replace(path, old)
        os.replace(source, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, path)


def sweep_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove staging entries left by processes that no longer run, in ``folder`` and the temp folder."""
    removed = []
    for where, pattern in ((Path(tempfile.gettempdir()), _STAGING_NAME), (Path(folder), _HIDDEN_NAME)):
        try:
            entries = list(where.iterdir())
        except OSError:
            continue
        for entry in entries:
            match = pattern.match(entry.name)
            if match is None or _owner_alive(entry, int(match.group(1))):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                try:
                    entry.unlink()
                except OSError:
                    pass
            if entry.exists() or entry.is_symlink():
                continue  # not ours to remove (another user's)
            removed.append(entry)
            logger.warning(
                "removed %s, a partial output left by an interrupted mambamim run (process %s)",
                entry,
                match.group(1),
            )
    return removed
