"""Input grid <-> model space: RAS orientation, target spacing, intensity normalisation, and back.

Model space is the layout MONAI training pipelines produce with ``LoadImage`` + ``Orientation("RAS")``
+ ``Spacing``: a float32 array indexed ``[i, j, k]`` where ``i`` increases towards the patient's
Right, ``j`` towards Anterior and ``k`` towards Superior, at the model card's spacing. The model-space
grid is axis-aligned and covers the input's physical extent, so oblique inputs are resampled onto it;
when the input is already axis-aligned at the target spacing the grids coincide voxel for voxel.

``from_model_space`` resamples a model-space array onto the *input* grid with SimpleITK's reference
image mechanism, so size, spacing, origin and direction are copied from the input exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from mambamim.data.intensity import normalize_intensity, validate_intensity_spec
from mambamim.errors import InvalidInput

# Direction of the model grid in ITK's LPS world: i -> Right (-x), j -> Anterior (-y), k -> Superior (+z).
RAS_DIRECTION_LPS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class ModelSpaceRef:
    """Geometry needed to invert ``to_model_space``: the input grid and the model grid."""

    input_grid: sitk.Image  # uint8 image with the input's geometry (ITK resamples onto a real image)
    model_size: tuple[int, int, int]  # (i, j, k) = array shape in model space
    model_spacing: tuple[float, float, float]
    model_origin: tuple[float, float, float]

    def model_grid(self) -> sitk.Image:
        """An empty image carrying the model-space geometry (ITK size order = array order here)."""
        grid = sitk.Image(list(self.model_size), sitk.sitkUInt8)
        grid.SetSpacing(self.model_spacing)
        grid.SetOrigin(self.model_origin)
        grid.SetDirection(RAS_DIRECTION_LPS)
        return grid


def model_space_grid(image: sitk.Image, spacing: Sequence[float]) -> ModelSpaceRef:
    """The RAS-aligned grid at ``spacing`` (mm, RAS axis order) covering ``image``'s physical extent."""
    target = np.asarray(spacing, dtype=np.float64)
    if target.shape != (3,) or np.any(target <= 0):
        raise InvalidInput(f"target spacing must be 3 positive numbers in mm, got {list(spacing)}")
    size = np.asarray(image.GetSize())
    # Physical corners of the input's voxel *boxes* (centres +- half a voxel), in LPS.
    corners = []
    for corner in np.ndindex(2, 2, 2):
        index = np.where(np.asarray(corner) == 1, size - 0.5, -0.5)
        corners.append(image.TransformContinuousIndexToPhysicalPoint(index.tolist()))
    corners_lps = np.asarray(corners)
    ras_axes = np.asarray(RAS_DIRECTION_LPS).reshape(3, 3)  # columns = model axes in LPS
    coords = corners_lps @ ras_axes  # coordinates along the model axes
    low, high = coords.min(axis=0), coords.max(axis=0)
    extent = high - low
    # Round to the nearest voxel count (an axis-aligned input at the target spacing maps 1:1).
    n = np.maximum(np.round(extent / target - 1e-6), 1).astype(int)
    # Centre the model grid on the input's extent.
    first_centre = low + (extent - (n - 1) * target) / 2.0
    origin = ras_axes @ first_centre
    return ModelSpaceRef(
        input_grid=_geometry_only(image),
        model_size=tuple(int(v) for v in n),
        model_spacing=tuple(float(v) for v in target),
        model_origin=tuple(float(v) for v in origin),
    )


def to_model_space(
    image: sitk.Image, spacing: Sequence[float], intensity: dict[str, Any]
) -> tuple[np.ndarray, ModelSpaceRef]:
    """Resample ``image`` to the RAS grid at ``spacing`` (linear) and normalise intensities by ``intensity``.

    Returns ``(array float32 (i, j, k), ref)``; ``ref`` is what :func:`from_model_space` needs.
    """
    spec = validate_intensity_spec(intensity)
    ref = model_space_grid(image, spacing)
    source = sitk.Cast(image, sitk.sitkFloat32)
    # Voxels outside the input (rounding of the extent) get the background value of the modality.
    pad = 0.0 if spec["type"] == "zscore" else float(sitk.GetArrayViewFromImage(source).min())
    resampled = sitk.Resample(
        source, ref.model_grid(), sitk.Transform(), sitk.sitkLinear, pad, sitk.sitkFloat32
    )
    array = sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)  # ITK (k, j, i) -> (i, j, k)
    array = normalize_intensity(np.ascontiguousarray(array), spec)
    return array.astype(np.float32, copy=False), ref


def from_model_space(array: np.ndarray, ref: ModelSpaceRef, is_label: bool) -> sitk.Image:
    """Resample a model-space ``array`` (i, j, k) onto exactly the input grid of ``ref``.

    Labels use nearest neighbour (values are never blended) and come back as uint8 (uint16 for more
    than 255 classes); other arrays use linear interpolation and float32.
    """
    array = np.asarray(array)
    if tuple(array.shape) != ref.model_size:
        raise InvalidInput(f"array shape {array.shape} does not match the model-space grid {ref.model_size}")
    if is_label:
        dtype = np.uint8 if array.max(initial=0) <= 255 else np.uint16
        array = array.astype(dtype, copy=False)
        interpolator = sitk.sitkNearestNeighbor
    else:
        array = array.astype(np.float32, copy=False)
        interpolator = sitk.sitkLinear
    model_image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    model_image.CopyInformation(ref.model_grid())
    out = sitk.Resample(
        model_image, ref.input_grid, sitk.Transform(), interpolator, 0, model_image.GetPixelID()
    )
    out.CopyInformation(ref.input_grid)  # bit-identical geometry, not just equal within ITK's tolerance
    return out


def _geometry_only(image: sitk.Image) -> sitk.Image:
    """A uint8 image with ``image``'s geometry, so the reference does not keep the voxel data alive."""
    grid = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    grid.CopyInformation(image)
    return grid
