"""Progress reporting and cancellation shared by every long-running command.

GUIs (the Slicer module) run ``mambamim segment --progress json`` in a child process and read one JSON
object per line on stdout::

    {"stage": "inference", "fraction": 0.42, "eta_s": 12.5, "message": "window 5/12"}

The last line is ``{"stage": "done", ..., "outputs": {name: path}}``, ``{"stage": "error", ...}`` or
``{"stage": "cancelled", ...}``. Everything else the engine says goes to stderr, so stdout stays
machine-readable.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from mambamim.errors import USER_ERRORS, InvalidInput

TERMINAL_STAGES = ("done", "error", "cancelled")
PROGRESS_MODES = ("json", "bar", "none")


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update: overall ``fraction`` in [0, 1], ``eta_s`` seconds left (None if unknown)."""

    stage: str
    fraction: float
    eta_s: float | None = None
    message: str = ""
    outputs: dict[str, str] | None = field(default=None)

    def to_json(self) -> str:
        eta = self.eta_s if self.eta_s is not None and math.isfinite(self.eta_s) else None
        record: dict[str, Any] = {
            "stage": self.stage,
            "fraction": round(min(max(float(self.fraction), 0.0), 1.0), 4),
            "eta_s": None if eta is None else round(max(eta, 0.0), 1),
            "message": self.message,
        }
        if self.outputs is not None:
            record["outputs"] = {str(k): str(v) for k, v in self.outputs.items()}
        return json.dumps(record, allow_nan=False)


ProgressCallback = Callable[[ProgressEvent], None]


class Cancelled(Exception):
    """Raised between work units once a :class:`CancelToken` has been cancelled."""


class CancelToken:
    """Thread-safe cancellation flag, checked by the engine between sliding windows."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class ProgressTracker:
    """Maps per-stage progress onto one overall fraction and estimates the time left.

    ``weights`` give each stage's share of the run. The ETA extrapolates the current stage's rate
    (e.g. seconds per sliding window, without the start-up cost) over the rest of the run; it is
    ``None`` until the stage has made measurable progress, never a guess.
    """

    def __init__(self, callback: ProgressCallback | None, weights: dict[str, float]) -> None:
        self.callback = callback
        total = sum(weights.values())
        self._start: dict[str, float] = {}
        acc = 0.0
        for stage, w in weights.items():
            self._start[stage] = acc / total
            acc += w
        self._share = {stage: w / total for stage, w in weights.items()}
        self.fraction = 0.0
        self._stage: str | None = None
        self._stage_t0 = time.perf_counter()
        self._stage_f0 = 0.0

    def update(self, stage: str, local_fraction: float, message: str = "") -> None:
        now = time.perf_counter()
        if stage != self._stage:
            self._stage, self._stage_t0, self._stage_f0 = stage, now, self.fraction
        local = min(max(local_fraction, 0.0), 1.0)
        self.fraction = max(self.fraction, self._start[stage] + self._share[stage] * local)
        gained = self.fraction - self._stage_f0
        eta = (now - self._stage_t0) / gained * (1.0 - self.fraction) if gained > 0.01 else None
        self.emit(ProgressEvent(stage, self.fraction, eta, message))

    def emit(self, event: ProgressEvent) -> None:
        if self.callback is not None:
            self.callback(event)


class _JsonReporter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: ProgressEvent) -> None:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()


class _BarReporter:
    """A tqdm bar on stderr in percent; terminal events close it and print their message."""

    def __init__(self) -> None:
        self._bar = None

    def __call__(self, event: ProgressEvent) -> None:
        from tqdm import tqdm

        if self._bar is None and event.stage not in TERMINAL_STAGES:
            self._bar = tqdm(
                total=100, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}<{remaining}"
            )
        if self._bar is not None:
            self._bar.set_description(event.stage)
            self._bar.n = round(100 * event.fraction, 1)
            if event.message:
                self._bar.set_postfix_str(event.message, refresh=False)
            self._bar.refresh()
        if event.stage in TERMINAL_STAGES:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if event.stage != "done" and event.message:
                print(f"{event.stage}: {event.message}", file=sys.stderr)


def make_reporter(mode: str, stream: TextIO | None = None) -> ProgressCallback:
    """A progress callback: ``json`` lines on stdout, a ``bar`` on stderr, or ``none`` (silent)."""
    if mode == "json":
        return _JsonReporter(stream or sys.stdout)
    if mode == "bar":
        return _BarReporter()
    if mode == "none":
        return lambda event: None
    raise InvalidInput(f"unknown progress mode {mode!r}; valid modes: {', '.join(PROGRESS_MODES)}")


def run_command(mode: str, work: Callable[[ProgressCallback, CancelToken], dict[str, str]]) -> int:
    """Run a command body with a reporter, cancellation on SIGINT/SIGTERM and a terminal progress event.

    ``work(reporter, cancel)`` returns the outputs ``{name: path}``. Exit codes: 0 done, 1 error (the
    message also goes to stderr), 130 cancelled. Engine warnings are logged to stderr.
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s: %(message)s")
    reporter = make_reporter(mode)
    cancel = CancelToken()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: cancel.cancel())
    try:
        outputs = work(reporter, cancel)
    except Cancelled:
        reporter(ProgressEvent("cancelled", 0.0, None, "cancelled; nothing was written"))
        if mode != "bar":
            print("cancelled; nothing was written", file=sys.stderr)
        return 130
    except Exception as err:  # every failure must end the JSON stream with an error event
        if not isinstance(err, USER_ERRORS):  # a bug, not the user's to fix: keep its traceback
            traceback.print_exc(file=sys.stderr)
        message = str(err) or type(err).__name__
        reporter(ProgressEvent("error", 0.0, None, message))
        if mode != "bar":  # the bar reporter prints terminal messages itself
            print(f"error: {message}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    reporter(ProgressEvent("done", 1.0, 0.0, "finished", outputs=outputs))
    return 0
