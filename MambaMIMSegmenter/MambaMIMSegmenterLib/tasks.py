"""One protocol for everything the module runs in the background, and one slot that runs one at a time.

Engine runs, downloads, pip installs and engine probes all offer ``poll()`` (non-blocking; True once
finished), ``cancel()``, ``fraction`` (None when unknown), ``statusText``, ``cancellable``, and after
finishing ``result`` / ``error``. The widget polls the :class:`TaskSlot` from a Qt timer and never
needs to know which kind of task it holds; the slot refuses a second task while one runs, so a
download can never replace a running segmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .runner import ProcessRunner


class Task(Protocol):
    fraction: float | None
    statusText: str
    cancellable: bool
    result: Any
    error: BaseException | None

    def poll(self) -> bool: ...

    def cancel(self) -> None: ...


class TaskBusy(RuntimeError):
    """A task is already running; the message names it."""


class TaskSlot:
    """Holds at most one running task with a name ("segment", "download", …) and a completion handler."""

    def __init__(self) -> None:
        self.task: Task | None = None
        self.kind: str | None = None
        self._onDone: Callable[[Task], None] | None = None

    @property
    def busy(self) -> bool:
        return self.task is not None

    def start(self, kind: str, task: Task, onDone: Callable[[Task], None]) -> None:
        if self.task is not None:
            task.cancel()
            raise TaskBusy(f"wait for the running {self.kind} to finish (or cancel it) first")
        self.task, self.kind, self._onDone = task, kind, onDone

    def poll(self) -> bool:
        """Poll the running task; when it has finished, free the slot and call its handler. True then."""
        task = self.task
        if task is None or not task.poll():
            return False
        onDone = self._onDone
        self.task = self.kind = self._onDone = None
        if onDone is not None:
            onDone(task)
        return True

    def cancel(self) -> Task | None:
        """Cancel the running task (its handler is not called); the cancelled task, or None."""
        task = self.task
        if task is None or not task.cancellable:
            return None
        self.task = self.kind = self._onDone = None
        task.cancel()
        return task


class ProbeTask:
    """A short child process of the engine's interpreter that answers with one ``done`` event; its
    ``outputs`` are turned into ``result`` by ``parse``."""

    fraction: float | None = None
    cancellable = True

    def __init__(
        self,
        command: Sequence[str],
        env: dict[str, str] | None,
        parse: Callable[[dict[str, str]], Any],
        statusText: str,
    ):
        self.statusText = statusText
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False
        self._parse = parse
        self.runner = ProcessRunner(command, env=env)
        self.runner.start()

    def poll(self) -> bool:
        if self.finished:
            return True
        self.runner.poll()
        if self.runner.returncode is None:
            return False
        try:
            self.result = self._parse(self.runner.result().outputs)
        except BaseException as exc:  # kept for the caller, like an engine run's errors
            self.error = exc
        self.finished = True
        return True

    def wait(self, timeout: float = 120.0) -> Any:
        self.runner.wait(timeout)
        self.poll()
        if self.error is not None:
            raise self.error
        return self.result

    def cancel(self) -> None:
        self.runner.cancel()
        self.finished = True
