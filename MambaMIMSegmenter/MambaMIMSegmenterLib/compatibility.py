"""Which Slicer releases the module supports, and the one message shown on an older one.

Slicer 5.10 and newer embed Python 3.12; 5.8 and older embed Python 3.9, where the engine's
dependencies (``tomllib``, current PyTorch and MONAI) are not available. This file must stay
importable on Python 3.9, so that an old Slicer shows the message instead of a traceback.
"""

from __future__ import annotations

import re
import sys

MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 12)
SUPPORTED_TEXT = "Slicer 5.10 or newer"


def parseVersion(text: str) -> tuple[int, int]:
    """(major, minor) of "5.10.0", "5.12.1-2026-01-02" or "5.13.0-2026-02-01"; (0, 0) when unknown."""
    match = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def unsupportedReason(
    slicerVersion: str, pythonVersion: tuple[int, int] | None = None
) -> str | None:
    """None on a supported Slicer, else the message that says what to do."""
    python = tuple(pythonVersion or sys.version_info[:2])
    slicer = parseVersion(slicerVersion)
    if slicer >= MINIMUM_SLICER and python >= MINIMUM_PYTHON:
        return None
    return (
        f"MambaMIM Segmenter needs {SUPPORTED_TEXT} (Python 3.12); this is Slicer "
        f"{slicerVersion or 'of unknown version'} with Python {python[0]}.{python[1]}. "
        "Install a current Slicer release from download.slicer.org to segment with this module."
    )
