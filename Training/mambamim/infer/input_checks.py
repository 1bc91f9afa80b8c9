"""Is this volume something a segmentation model may be run on? Refuse label maps, another modality
and volumes too small to hold anything, each with what was seen and the flag that overrides it.

One rule each, used by the engine (``mambamim segment``); the Slicer module applies the same
modality rule before it starts the engine:

- **modality** (:func:`mambamim.infer.modality.modality_rule`, for images :func:`image_modality`).
- **label map** (:func:`label_map_evidence`): integer values, at most ``LABEL_MAX_VALUES`` distinct
  ones, and piecewise constant: among neighbouring voxel pairs that are not both background, fewer than
  ``LABEL_MAX_CHANGE`` differ. (Measured on the shared data: label maps 0.02-0.19, scans 0.90-0.97,
  including the 8-bit FreeSurfer ``norm.mgz`` with 117 values.)
- **size**: the volume must span at least ``MIN_EXTENT_MM`` along every axis.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from mambamim.data.imageio import DICOM_MODALITY_KEY
from mambamim.errors import MambaMIMError
from mambamim.infer.modality import SAMPLE_VOXELS, modality_rule, sample_voxels

LABEL_MAX_VALUES = 1000
LABEL_MAX_CHANGE = 0.5
MIN_EXTENT_MM = 30.0


class InputRefused(MambaMIMError, ValueError):
    """The volume is readable but not something to segment with this model (override flag in the text)."""


def image_modality(image: sitk.Image, values: np.ndarray | None = None) -> tuple[str, str]:
    """:func:`modality_rule` for an image read by :func:`mambamim.data.imageio.read_image` (which keeps a
    DICOM series' Modality tag as metadata); ``values`` may be given when the caller has the array."""
    tag = image.GetMetaData(DICOM_MODALITY_KEY) if image.HasMetaDataKey(DICOM_MODALITY_KEY) else None
    return modality_rule(sitk.GetArrayViewFromImage(image) if values is None else values, tag)


def label_map_evidence(array: np.ndarray) -> str | None:
    """Words describing why ``array`` looks like a label map, or None when it looks like a scan."""
    sample = sample_voxels(array)
    if not (np.issubdtype(sample.dtype, np.integer) or bool(np.all(np.mod(sample, 1) == 0))):
        return None
    values = np.unique(sample)
    if values.size > LABEL_MAX_VALUES:
        return None
    background = array.min()
    changed = considered = 0
    for axis in range(array.ndim):
        # Adjacent pairs along ``axis``, on a sub-grid of the other axes to bound the work.
        moved = np.moveaxis(array, axis, 0)
        stride = max(1, int(np.sqrt(moved[0].size / (SAMPLE_VOXELS / max(moved.shape[0], 1)))))
        grid = moved[:, ::stride, ::stride]
        a, b = grid[1:], grid[:-1]
        foreground = (a != background) | (b != background)
        changed += int(np.count_nonzero((a != b) & foreground))
        considered += int(np.count_nonzero(foreground))
    change = changed / max(considered, 1)
    if change >= LABEL_MAX_CHANGE:
        return None
    shown = ", ".join(str(v) for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
    return (
        f"{values.size} distinct integer values ({shown}) in regions of constant value "
        f"({change:.0%} of neighbouring voxels differ; in a scan most do)"
    )


def check_segmentation_input(
    image: sitk.Image,
    source: str,
    expected: str,
    *,
    modality: str | None = None,
    allow_label_map: bool = False,
    allow_other_modality: bool = False,
    allow_small: bool = False,
) -> None:
    """Refuse (``InputRefused`` naming ``source``) what a model for ``expected`` (CT or MR, the card's
    ``input.modality``) should not be run on.

    ``modality`` declares the input's modality and replaces the guess; each ``allow_*`` turns one check
    off (the command-line flags of the same names).
    """
    extent = [n * s for n, s in zip(image.GetSize(), image.GetSpacing())]
    if not allow_small and min(extent) < MIN_EXTENT_MM:
        shown = " x ".join(f"{e:.0f}" for e in extent)
        raise InputRefused(
            f"{source} is too small to segment: it spans {shown} mm ({'x'.join(map(str, image.GetSize()))} "
            f"voxels), at least {MIN_EXTENT_MM:.0f} mm along every axis is needed; "
            "pass --allow-small to segment it anyway"
        )
    array = sitk.GetArrayViewFromImage(image)
    if not allow_label_map:
        evidence = label_map_evidence(array)
        if evidence is not None:
            raise InputRefused(
                f"{source} looks like a label map, not a scan: {evidence}; "
                "give the image itself, or pass --allow-label-map if it really is a scan"
            )
    if modality is not None:
        actual, evidence = modality.upper(), "it was declared so (--modality)"
    else:
        actual, evidence = image_modality(image, array)
    if actual != expected and not allow_other_modality:
        raise InputRefused(
            f"{source} looks like {actual}, the model is for {expected} images: {evidence}; "
            f"choose a {actual} model, or pass --modality {expected} if it is a {expected} image "
            "(--allow-other-modality runs the model anyway)"
        )
