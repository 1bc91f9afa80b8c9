"""Reconstruction figure in the style of MambaMIM's Fig. 9: original, masked input and reconstruction.

Rows are the axial, coronal and sagittal planes through the volume centre, drawn from model-space
arrays (RAS axes, isotropic spacing, so pixels are square) in radiological convention: patient right on
the image's left, anterior / superior up. Rendered with matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mambamim.errors import InvalidInput
from mambamim.safe_write import safe_write


def _planes(volume: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Axial, coronal and sagittal centre slices of an (R, A, S)-indexed volume, ready for ``imshow``
    with ``origin="lower"``."""
    i, j, k = (s // 2 for s in volume.shape)
    return [
        ("axial", volume[::-1, :, k].T),  # rows: A (up), columns: R -> L
        ("coronal", volume[::-1, j, :].T),  # rows: S (up), columns: R -> L
        ("sagittal", volume[i, ::-1, :].T),  # rows: S (up), columns: A -> P
    ]


def save_reconstruction_figure(
    path: str | Path,
    original: np.ndarray,
    masked: np.ndarray,
    reconstruction: np.ndarray,
    title: str = "",
) -> Path:
    """Write a 3×3 PNG (planes × [original, masked input, reconstruction]) atomically to ``path``.

    All three arrays are model-space volumes of one shape; the grey range is the 1st-99th percentile of
    ``original`` so CT and MR both display sensibly.
    """
    # A bare Figure renders through Agg without touching pyplot's global backend (safe inside Slicer).
    from matplotlib.figure import Figure

    if not original.shape == masked.shape == reconstruction.shape or original.ndim != 3:
        raise InvalidInput(
            f"figure volumes must be 3-D and of one shape, got {original.shape}, {masked.shape}, "
            f"{reconstruction.shape}"
        )
    low, high = np.percentile(original, [1, 99])
    if high <= low:
        high = low + 1.0
    columns = [("original", original), ("masked input", masked), ("reconstruction", reconstruction)]
    fig = Figure(figsize=(9, 9))
    axes = fig.subplots(3, 3, squeeze=False)
    for col, (name, volume) in enumerate(columns):
        for row, (plane, image) in enumerate(_planes(volume)):
            ax = axes[row][col]
            ax.imshow(image, cmap="gray", vmin=low, vmax=high, origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(plane)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with safe_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path
