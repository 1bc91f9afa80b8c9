"""Target voxel spacing as users type it."""

from __future__ import annotations

from mambamim.errors import InvalidInput


def parse_spacing(text: str) -> list[float]:
    """``1.5`` (isotropic) or ``1.5,1.5,2`` (x, y, z) in mm: three positive numbers."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise InvalidInput(f"spacing must be one or three positive numbers (mm), got {text!r}")
    return values
