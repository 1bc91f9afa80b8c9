"""Is this volume something a segmentation model may be run on? Refuse label maps, another modality
and volumes too small to hold anything, each with what was seen and the flag that overrides it.

One rule each, used by the engine (``mambamim segment``) and, through :func:`modality_rule`, by the
Slicer module, so both always agree:

- **modality** (:func:`modality_rule`, for images :func:`guess_modality`): the DICOM Modality tag
  (0008,0060) when the image carries one; otherwise intensities: a CT holds air at about -1000 HU,
  so a 0.5th percentile below -50 means CT, anything else MR. (On the shared scans: CT -1023 and
  -1024, MR -4 and 0.)
- **label map** (:func:`label_map_evidence`): integer values, at most ``LABEL_MAX_VALUES`` distinct
  ones, and piecewise constant: among neighbouring voxel pairs that are not both background, fewer than
  ``LABEL_MAX_CHANGE`` differ. (Measured on the shared data: label maps 0.02-0.19, scans 0.90-0.97,
  including the 8-bit FreeSurfer ``norm.mgz`` with 117 values.)
- **size**: the volume must span at least ``MIN_EXTENT_MM`` along every axis.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from mambamim.infer.io import DICOM_MODALITY_KEY

CT_LOW_PERCENTILE = 0.5
CT_LOW_VALUE = -50.0
LABEL_MAX_VALUES = 1000
LABEL_MAX_CHANGE = 0.5
MIN_EXTENT_MM = 30.0
_SAMPLE = 2_000_000  # voxels looked at; enough for stable percentiles and counts


class InputRefused(ValueError):
    """The volume is readable but not something to segment with this model (override flag in the text)."""


def modality_rule(values: np.ndarray, dicom_modality: Optional[str] = None) -> tuple[str, str]:
    """The one modality rule of the engine and the Slicer module: ``(modality, evidence in words)``.

    ``dicom_modality`` is the DICOM Modality tag (0008,0060) when the volume came with one (it wins;
    "MRI" is read as "MR"); otherwise ``values`` (the voxels, any layout) decide: CT when the 0.5th
    percentile is below -50, i.e. the volume holds air in Hounsfield units, else MR.
    """
    if dicom_modality is not None and dicom_modality.strip():
        tag = dicom_modality.strip().upper()
        return ("MR" if tag == "MRI" else tag), f"its DICOM Modality tag is {tag}"
    low = float(np.percentile(_sample(values), CT_LOW_PERCENTILE))
    if low < CT_LOW_VALUE:
        return "CT", f"it has no DICOM Modality tag and its darkest voxels ({low:.0f}) look like air in HU"
    return "MR", (
        f"it has no DICOM Modality tag and its darkest voxels ({low:.3g}) are not air in HU "
        f"(a CT has values below {CT_LOW_VALUE:.0f})"
    )


def guess_modality(image: sitk.Image, values: Optional[np.ndarray] = None) -> tuple[str, str]:
    """:func:`modality_rule` for an image read by :func:`mambamim.infer.io.read_image` (which keeps a
    DICOM series' Modality tag as metadata); ``values`` may be given when the caller has the array."""
    tag = image.GetMetaData(DICOM_MODALITY_KEY) if image.HasMetaDataKey(DICOM_MODALITY_KEY) else None
    return modality_rule(sitk.GetArrayViewFromImage(image) if values is None else values, tag)


def label_map_evidence(array: np.ndarray) -> Optional[str]:
    """Words describing why ``array`` looks like a label map, or None when it looks like a scan."""
    sample = _sample(array)
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
        stride = max(1, int(np.sqrt(moved[0].size / (_SAMPLE / max(moved.shape[0], 1)))))
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
    card: dict[str, Any],
    *,
    modality: Optional[str] = None,
    allow_label_map: bool = False,
    allow_other_modality: bool = False,
    allow_small: bool = False,
) -> None:
    """Refuse (``InputRefused`` naming ``source``) what the model should not be run on.

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
    expected = card["input"]["modality"]
    if modality is not None:
        actual, evidence = modality.upper(), "it was declared so (--modality)"
    else:
        actual, evidence = guess_modality(image, array)
    if actual != expected and not allow_other_modality:
        raise InputRefused(
            f"{source} looks like {actual}, the model is for {expected} images: {evidence}; "
            f"choose a {actual} model, or pass --modality {expected} if it is a {expected} image "
            "(--allow-other-modality runs the model anyway)"
        )


def _sample(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    return flat[:: max(1, flat.size // _SAMPLE)]
