"""Engine runs and model downloads for the web app, polled from the server's event loop.

The engine runs in its own process (``MambaMIMSegmenterLib``'s :class:`EngineJob`), at a lower CPU
priority than the server, so streaming views stays responsive while a model runs. The finishing step
(reading the outputs into nodes, adding them) runs inside one batched scene update.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from MambaMIMSegmenterLib import EngineCancelled, EngineJob
from MambaMIMSegmenterLib.progress import formatSeconds

POLL_SECONDS = 0.25
ENGINE_NICENESS = 5


@dataclass
class Progress:
    """What the progress bar shows."""

    percent: float = 0.0
    text: str = ""
    log: list[str] = field(default_factory=list)


def lower_priority(job: EngineJob) -> None:
    """Nice the engine so the server (rendering) wins CPU contention on small machines."""
    process = job.runner.process
    if process is None:
        return
    try:
        import psutil

        psutil.Process(process.pid).nice(ENGINE_NICENESS)
    except (ImportError, OSError, AttributeError):  # Windows priority classes, exited process
        pass


def describe(job: EngineJob) -> Progress:
    event = job.lastEvent
    if event is None:
        return Progress(0.0, f"starting the engine ({formatSeconds(job.elapsedSeconds)})")
    text = f"{event.stage}"
    if event.message:
        text += f": {event.message}"
    if event.eta_s is not None and not event.terminal:
        text += f" (about {formatSeconds(event.eta_s)} left)"
    return Progress(round(100 * event.fraction, 1), text)


async def follow(
    job: EngineJob,
    on_progress: Callable[[Progress], None],
    on_done: Callable[[Any, BaseException | None], None],
    batch: Callable[[], Any],
) -> None:
    """Poll ``job`` until it ends; report progress, then the result or the error (cancel included)."""
    lower_priority(job)
    while True:
        exited = job.runner.process is not None and job.runner.process.poll() is not None
        if exited:
            with batch():
                finished = job.poll()
        else:
            finished = job.poll()
        if finished:
            break
        on_progress(describe(job))
        await asyncio.sleep(POLL_SECONDS)
    error = job.error
    if isinstance(error, EngineCancelled):
        error = EngineCancelled("cancelled: nothing was added to the scene")
    on_done(job.result, error)
