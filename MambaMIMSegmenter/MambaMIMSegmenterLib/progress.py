"""Parse the engine's JSON-lines progress protocol (``mambamim ... --progress json``).

The child writes one JSON object per line on stdout::

    {"stage": "inference", "fraction": 0.42, "eta_s": 12.5, "message": "window 5/12"}

and ends with a ``done`` (with ``outputs``), ``error`` or ``cancelled`` line. Pipes deliver arbitrary
chunks, so the parser buffers partial lines; anything that is not a protocol object (library warnings
printed to stdout, a traceback, a half-written line at a crash) is passed on as plain log text instead
of breaking the run.
"""

from __future__ import annotations

import codecs
import json
import math
from dataclasses import dataclass, field
from typing import Union

TERMINAL_STAGES = ("done", "error", "cancelled")


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update; ``fraction`` is clamped to [0, 1], ``eta_s`` is None when unknown."""

    stage: str
    fraction: float
    eta_s: float | None = None
    message: str = ""
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.stage in TERMINAL_STAGES

    def describe(self) -> str:
        """Short human text for a progress bar: ``inference 42% (about 13 s left) window 5/12``."""
        text = f"{self.stage} {round(100 * self.fraction)}%"
        if self.eta_s is not None:
            text += f" (about {formatSeconds(self.eta_s)} left)"
        return f"{text} {self.message}".strip()


LogLine = str
ParsedItem = Union[ProgressEvent, LogLine]


def formatSeconds(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``; under a minute in whole seconds."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s"


def parseLine(line: str) -> ParsedItem:
    """A protocol object becomes a :class:`ProgressEvent`; anything else is returned as log text."""
    text = line.rstrip()  # keep indentation: tracebacks stay readable in the log
    if not text.lstrip().startswith("{"):
        return text
    try:
        record = json.loads(text)
    except ValueError:
        return text
    if not isinstance(record, dict) or not isinstance(record.get("stage"), str):
        return text
    try:
        fraction = float(record.get("fraction", 0.0))
    except (TypeError, ValueError):
        return text
    if not math.isfinite(fraction):
        return text
    eta = record.get("eta_s")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta):
        eta = None
    outputs = record.get("outputs")
    outputs = {str(k): str(v) for k, v in outputs.items()} if isinstance(outputs, dict) else {}
    return ProgressEvent(
        stage=record["stage"],
        fraction=min(max(fraction, 0.0), 1.0),
        eta_s=None if eta is None else max(float(eta), 0.0),
        message=str(record.get("message") or ""),
        outputs=outputs,
    )


class JsonLinesParser:
    """Incremental parser: :meth:`feed` bytes or text in any chunking, get complete items back."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""

    def feed(self, chunk: bytes | str) -> list[ParsedItem]:
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        self._buffer += text
        *lines, self._buffer = self._buffer.replace("\r\n", "\n").split("\n")
        return [item for item in (parseLine(line) for line in lines) if _nonEmpty(item)]

    def flush(self) -> list[ParsedItem]:
        """Parse what is left when the stream has ended (a last line without newline)."""
        rest = self._buffer + self._decoder.decode(b"", final=True)
        self._buffer = ""
        item = parseLine(rest)
        return [item] if _nonEmpty(item) else []


def _nonEmpty(item: ParsedItem) -> bool:
    return not isinstance(item, str) or bool(item.strip())
