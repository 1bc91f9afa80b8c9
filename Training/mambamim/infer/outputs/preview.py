"""A PNG of a segmentation over its scan: axial, coronal and sagittal planes with a legend.

Like TotalSegmentator's ``--preview``, for a first look without a viewer. Both volumes are reoriented
to LPS (x to the patient's left, y posterior, z superior) and shown in radiological convention: the
patient's right on the image's left, anterior up in the axial plane, superior up in the others, with
the true voxel aspect ratio. Each plane passes through the centre of the segmented voxels (the
volume's centre when nothing was found). Organs are filled in the card's colours at 45 % opacity;
the legend lists the organs present with their volumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mambamim.safe_write import safe_write

OPACITY = 0.45


def _lps(image: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Array (z, y, x) with x to patient left, y posterior, z superior; spacing (x, y, z) in mm."""
    oriented = sitk.DICOMOrient(image, "LPS")
    return sitk.GetArrayFromImage(oriented), oriented.GetSpacing()


def _planes(array: np.ndarray, centre: Sequence[int]) -> list[np.ndarray]:
    """Axial (rows A->P), coronal and sagittal (rows I->S, drawn with origin lower) slices."""
    z, y, x = centre
    return [array[z], array[:, y, :], array[:, :, x]]


def display_range(image: sitk.Image, window: tuple[float, float] | None) -> tuple[float, float]:
    """``window`` when given, else the 1st-99th percentile of the scan."""
    if window is not None:
        return float(window[0]), float(window[1])
    low, high = np.percentile(sitk.GetArrayViewFromImage(image), [1, 99])
    return float(low), float(max(high, low + 1.0))


def save_preview(
    path: str | Path,
    image: sitk.Image,
    label_map: sitk.Image,
    labels: Sequence[dict[str, Any]],
    *,
    window: tuple[float, float] | None = None,
    title: str = "",
    dpi: int = 150,
) -> Path:
    """Write the preview PNG atomically; ``window`` (low, high) in the scan's units (default:
    1st-99th percentile). ``image`` and ``label_map`` share one grid."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from mambamim.infer.evaluate import check_same_grid

    check_same_grid(label_map, image, where="label map")
    scan, spacing = _lps(image)
    seg, _ = _lps(label_map)
    found = np.argwhere(seg > 0)
    centre = found.mean(axis=0).round().astype(int) if len(found) else np.asarray(seg.shape) // 2
    low, high = display_range(image, window)
    colours = np.zeros((int(seg.max()) + 1, 4))
    for label in labels:
        if int(label["value"]) < len(colours):
            colours[int(label["value"])] = [*(c / 255 for c in label["color"]), OPACITY]
    sx, sy, sz = spacing
    aspects = [sy / sx, sz / sx, sz / sy]
    # Rows: axial A (top) -> P; coronal and sagittal S up (origin lower). Columns: patient right on the
    # left = x increasing (x points to the patient's left); sagittal anterior on the left.
    origins = ["upper", "lower", "lower"]
    names = ["axial", "coronal", "sagittal"]
    widths = [scan.shape[2] * sx, scan.shape[2] * sx, scan.shape[1] * sy]
    fig = Figure(figsize=(12, 5.2))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": widths})
    for ax, plane, overlay, aspect, origin, name in zip(
        axes, _planes(scan, centre), _planes(seg, centre), aspects, origins, names
    ):
        ax.imshow(
            plane, cmap="gray", vmin=low, vmax=high, aspect=aspect, origin=origin, interpolation="nearest"
        )
        ax.imshow(colours[overlay], aspect=aspect, origin=origin, interpolation="nearest")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(seg.ravel(), minlength=len(colours))
    handles = [
        Patch(
            color=tuple(c / 255 for c in label["color"]),
            label=f"{label['name']} ({counts[v] * voxel_ml:.0f} mL)",
        )
        for label in labels
        if (v := int(label["value"])) < len(counts) and counts[v]
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False)
    else:
        fig.text(0.5, 0.04, "no organ found", ha="center")
    rows = -(-len(handles) // 6) if handles else 1
    fig.suptitle(title or "segmentation preview", fontsize=11)
    fig.text(
        0.01, 0.97, f"window {low:g} .. {high:g}; radiological view (patient right on the left)", fontsize=7
    )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.08 + 0.035 * rows, wspace=0.03)
    path = Path(path)
    with safe_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
