"""Run the engine in a child process without ever blocking the caller.

Slicer's GUI thread must stay responsive while a model runs for minutes, so the engine
(``python -m mambamim ...``) runs in its own process. Two reader threads copy the child's stdout and
stderr into a queue; the owner calls :meth:`ProcessRunner.poll` (from a Qt timer in the GUI, in a loop
in scripts) to parse the JSON-lines progress in its own thread. :meth:`ProcessRunner.cancel` kills
the whole process tree: the engine may have started worker processes (data loaders), and a killed
parent must not leave them running.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from .progress import JsonLinesParser, ProgressEvent

# Lines of stderr kept to explain a crash.
_STDERR_TAIL = 40


class EngineError(RuntimeError):
    """The engine failed; the message says why (its own error text or the end of its stderr)."""


class EngineCancelled(RuntimeError):
    """The run was cancelled by the user."""


class ProcessRunner:
    """One child process with JSON-lines progress on stdout and free text on stderr."""

    def __init__(
        self, command: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None
    ):
        self.command = [str(part) for part in command]
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.events: list[ProgressEvent] = []
        self.log: list[str] = []
        self.returncode: int | None = None
        self.cancelled = False
        self._queue: queue.Queue = queue.Queue()
        self._parser = JsonLinesParser()
        self._stderr_parser = JsonLinesParser()
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL)
        self._threads: list[threading.Thread] = []

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("this runner was already started; create a new one for another run")
        kwargs: dict = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            # Own process group, so cancel can signal the engine and every process it started.
            kwargs["start_new_session"] = True
        try:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                cwd=self.cwd,
                **kwargs,
            )
        except OSError as exc:
            raise EngineError(f"could not start the engine ({self.command[0]}): {exc}") from exc
        for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            thread = threading.Thread(target=self._pump, args=(name, stream), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, name: str, stream) -> None:
        # read1 returns whatever is available, so progress arrives as soon as the child flushes it.
        while True:
            chunk = stream.read1(65536)
            if not chunk:
                break
            self._queue.put((name, chunk))
        self._queue.put((name, None))

    @property
    def running(self) -> bool:
        return self.process is not None and self.returncode is None

    def poll(self) -> list[ProgressEvent]:
        """Non-blocking: parse what the child said since the last call; notice when it has exited."""
        if self.process is None:
            return []
        new_events: list[ProgressEvent] = []
        while True:
            try:
                name, chunk = self._queue.get_nowait()
            except queue.Empty:
                break
            parser = self._parser if name == "stdout" else self._stderr_parser
            items = parser.feed(chunk) if chunk is not None else parser.flush()
            for item in items:
                if isinstance(item, ProgressEvent) and name == "stdout":
                    new_events.append(item)
                else:
                    text = item.describe() if isinstance(item, ProgressEvent) else item
                    self.log.append(text)
                    if name == "stderr":
                        self._stderr_tail.append(text)
        self.events.extend(new_events)
        if (
            self.returncode is None
            and self.process.poll() is not None
            and not any(t.is_alive() for t in self._threads)
        ):
            if self._queue.empty():
                self.returncode = self.process.returncode
                self._close_pipes()
            else:
                new_events.extend(self.poll())
        return new_events

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> int:
        """Block until the child exits (polling so that progress keeps being parsed); the exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            if self.returncode is not None:
                return self.returncode
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the engine did not finish within {timeout} s")
            time.sleep(interval)

    def cancel(self) -> None:
        """Kill the child and all of its descendants; safe to call at any time, also twice."""
        self.cancelled = True
        if self.process is None or self.process.poll() is not None:
            return
        killProcessTree(self.process.pid)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for thread in self._threads:
            thread.join(timeout=5)
        self.poll()

    def _close_pipes(self) -> None:
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    # -- outcome ---------------------------------------------------------------------------------
    @property
    def lastEvent(self) -> ProgressEvent | None:
        return self.events[-1] if self.events else None

    def result(self) -> ProgressEvent:
        """The ``done`` event of a finished run; raises EngineCancelled / EngineError otherwise."""
        if self.returncode is None:
            raise RuntimeError("the engine is still running")
        last = self.lastEvent
        if self.cancelled or (last is not None and last.stage == "cancelled"):
            raise EngineCancelled("cancelled by the user")
        if last is not None and last.stage == "error":
            raise EngineError(last.message or f"the engine failed with exit code {self.returncode}")
        if self.returncode != 0 or last is None or last.stage != "done":
            tail = "\n".join(self._stderr_tail) or "(no output)"
            raise EngineError(
                f"the engine stopped unexpectedly (exit code {self.returncode}). Its last output:\n{tail}"
            )
        return last


def killProcessTree(pid: int) -> None:
    """Kill ``pid`` and every descendant (psutil when available, else the process group / taskkill)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            parent = psutil.Process(pid)
            victims = [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            return
        for proc in victims:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=10)
        return
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], capture_output=True, check=False)
    else:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def pythonExecutable() -> str:
    """The Python that runs the engine: ``PythonSlicer`` inside Slicer (whose ``sys.executable`` is
    the application itself), the current interpreter anywhere else."""
    import shutil

    name = "PythonSlicer" + (".exe" if sys.platform == "win32" else "")
    candidates = [shutil.which("PythonSlicer")]  # Slicer puts its bin folder on PATH
    if sys.executable:  # empty for embedded interpreters that cannot tell
        executable = Path(sys.executable)
        if executable.stem.lower().startswith("python"):
            return str(executable)
        # The Linux/Windows and macOS bundle layouts.
        candidates += [executable.with_name(name), executable.parent.parent / "bin" / name]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    where = sys.executable or "the application"
    raise EngineError(f"cannot find PythonSlicer (on PATH or next to {where}) to run the engine")


def engineEnvironment(enginePaths: Sequence[str]) -> dict[str, str]:
    """The child's environment: ours plus the folders that hold the ``mambamim`` package, unbuffered."""
    env = dict(os.environ)
    paths = [str(p) for p in enginePaths]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env
