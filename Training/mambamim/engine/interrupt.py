"""Turn SIGINT / SIGTERM into a flag so the loop finishes its step, saves a checkpoint and exits 130.

A second Ctrl-C while the flag is already set restores the default behaviour (immediate
``KeyboardInterrupt``), so a stuck run can still be killed.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class GracefulInterrupt:
    """Context manager: ``.requested`` becomes True on the first SIGINT/SIGTERM."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> GracefulInterrupt:
        # Signal handlers can only be installed from the main thread (e.g. not inside a GUI worker).
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
