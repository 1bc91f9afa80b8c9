"""Resumable, SHA-256-verified downloads that run in a background thread.

A download writes to ``<target>.part``; when interrupted (network error, cancel, Slicer closed) the
next attempt asks the server for the remaining bytes with an HTTP ``Range`` header and appends them
(a server that ignores ``Range`` answers 200 and the file starts over). Only a file whose SHA-256
matches the registry is renamed to its final name, so the cache never holds an unverified model.
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """Download or verification failed; the message names the URL or file."""


class DownloadCancelled(DownloadError):
    """Stopped by the user; the partial file is kept so the next attempt resumes."""


class ChecksumError(DownloadError):
    """The bytes are not the published file."""


def sha256File(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verifySha256(path: Path, expected: str) -> None:
    actual = sha256File(path)
    if actual.lower() != expected.lower():
        raise ChecksumError(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual}. "
            "The file is corrupt or not the published model; it was not used."
        )


class Download:
    """Fetch ``url`` to ``target`` in a thread; poll ``bytesDone`` / ``bytesTotal`` / ``done``."""

    def __init__(self, url: str, target: Path, sha256: str, timeout: float = 30.0):
        self.url = url
        self.target = Path(target)
        self.partPath = self.target.with_name(self.target.name + ".part")
        self.sha256 = sha256
        self.timeout = timeout
        self.bytesDone = 0
        self.bytesTotal: int | None = None
        self.error: BaseException | None = None
        self.done = False
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Download:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    cancellable = True

    def cancel(self) -> None:
        self._cancel.set()

    def poll(self) -> bool:
        """Task protocol: True once finished (verified, failed or cancelled)."""
        return self.done

    @property
    def result(self) -> Path | None:
        return self.target if self.done and self.error is None else None

    @property
    def fraction(self) -> float | None:
        return self.bytesDone / self.bytesTotal if self.bytesTotal else None

    @property
    def statusText(self) -> str:
        return f"Downloading… {self.bytesDone / 1e6:.1f} MB"

    def wait(self, timeout: float | None = None) -> Path:
        """Block until finished; the verified file, or the download's error raised here."""
        if self._thread is None:
            self.start()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"download of {self.url} did not finish within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.target

    def _run(self) -> None:
        try:
            self._fetch()
            verifySha256(self.partPath, self.sha256)
            os.replace(self.partPath, self.target)
        except ChecksumError as exc:
            # A verified mismatch cannot be resumed into something valid: start over next time.
            self.partPath.unlink(missing_ok=True)
            self.error = exc
        except BaseException as exc:  # reported to the polling thread, never lost in this one
            self.error = (
                exc
                if isinstance(exc, DownloadError)
                else DownloadError(f"download of {self.url} failed: {exc}")
            )
        finally:
            self.done = True

    def _fetch(self) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        have = self.partPath.stat().st_size if self.partPath.exists() else 0
        request = urllib.request.Request(self.url, headers={"User-Agent": "MambaMIMSegmenter"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # the part file is already complete
                self.bytesDone = self.bytesTotal = have
                return
            raise
        with response:
            resumed = have and getattr(response, "status", 200) == 206
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            self.bytesTotal = have + int(length) if length and length.isdigit() else None
            self.bytesDone = have
            with open(self.partPath, "ab" if resumed else "wb") as stream:
                while True:
                    if self._cancel.is_set():
                        raise DownloadCancelled(
                            f"download of {self.url} was cancelled (it resumes next time)"
                        )
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    stream.write(block)
                    self.bytesDone += len(block)
