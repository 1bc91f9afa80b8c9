"""Class probabilities: from the model grid to the input grid, averaging, the label map, saved files.

As nnU-Net v2 exports a prediction (``resample_and_save`` / ``convert_predicted_logits_to_segmentation_
with_correct_shape``), the softmax probabilities, not the argmax, are resampled (linearly, per class)
onto the input grid and the label map is their argmax there; thin structures then survive a model grid
coarser than the input instead of being blocked by nearest-neighbour resampling.

Averaging members (TTA passes are averaged as logits in :mod:`mambamim.infer.tta`; packages and saved
files are averaged here as probabilities, as ``nnUNetv2_ensemble`` does): linear interpolation is
linear, so members on the same model grid are averaged there first and resampled once, exactly.

Saved probabilities (``--save-probabilities``): an ``.npz`` with ``probabilities`` (float16, classes x
Z x Y x X on the input grid, the array order of ``SimpleITK.GetArrayFromImage`` and of nnU-Net's
``.npz``), ``labels`` (the card's label table as JSON), the grid (``size``, ``spacing``, ``origin``,
``direction``, ITK/LPS conventions) and ``members`` (what was averaged).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mambamim.data.imageio import check_writable
from mambamim.errors import InvalidInput
from mambamim.infer.preprocess import ModelSpaceRef
from mambamim.safe_write import safe_write

PROBABILITY_SUFFIX = ".npz"


@dataclass
class ModelGridProbabilities:
    """Softmax probabilities (classes, i, j, k) float32 on one package's model grid."""

    probabilities: np.ndarray
    ref: ModelSpaceRef


@dataclass
class SavedProbabilities:
    """A probability file: (classes, Z, Y, X) on the grid ``grid`` (an empty image of that geometry)."""

    probabilities: np.ndarray
    labels: list[dict[str, Any]]
    grid: sitk.Image
    members: list[str]
    path: Path


def class_to_input_grid(values: np.ndarray, ref: ModelSpaceRef, outside: float) -> np.ndarray:
    """One class's model-space (i, j, k) probabilities, linearly resampled onto the input grid (Z, Y, X)."""
    model_image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0), dtype=np.float32))
    model_image.CopyInformation(ref.model_grid())
    out = sitk.Resample(
        model_image, ref.input_grid, sitk.Transform(), sitk.sitkLinear, outside, sitk.sitkFloat32
    )
    return sitk.GetArrayFromImage(out)


def _label_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes <= 256 else np.uint16


def label_image(labels: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """A (Z, Y, X) label array as an image with exactly ``grid``'s geometry."""
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(grid)
    return image


def combine(
    members: Sequence[ModelGridProbabilities],
    saved: Sequence[SavedProbabilities] = (),
    *,
    grid: sitk.Image,
    keep_probabilities: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Average ``members`` and ``saved`` on the input ``grid``; return (labels (Z, Y, X), probabilities).

    Every member and saved file counts once. The probabilities (classes, Z, Y, X float32) come back only
    with ``keep_probabilities``; otherwise a single model grid is reduced class by class to a running
    argmax, which needs two input-grid arrays instead of one per class. Outside a model grid (rounding
    of its extent) the background has probability 1.
    """
    total = len(members) + len(saved)
    if total == 0:
        raise InvalidInput("nothing to combine: no model and no probability file")
    num_classes = (members[0].probabilities if members else saved[0].probabilities).shape[0]
    groups: dict[tuple, list[Any]] = {}
    for member in members:
        key = (member.ref.model_size, member.ref.model_spacing, member.ref.model_origin)
        if key in groups:
            groups[key][0] = groups[key][0] + member.probabilities
            groups[key][2] += 1
        else:
            groups[key] = [member.probabilities, member.ref, 1]
    shape = tuple(reversed(grid.GetSize()))

    if not keep_probabilities and len(groups) == 1 and not saved:
        ((summed, ref, count),) = groups.values()
        best = np.full(shape, -1.0, dtype=np.float32)
        labels = np.zeros(shape, dtype=_label_dtype(num_classes))
        for c in range(num_classes):
            p = class_to_input_grid(summed[c] / count, ref, 1.0 if c == 0 else 0.0)
            better = p > best  # ties keep the lower class, as argmax does
            best[better] = p[better]
            labels[better] = c
        return labels, None

    full = np.zeros((num_classes, *shape), dtype=np.float32)
    for summed, ref, count in groups.values():
        for c in range(num_classes):
            full[c] += class_to_input_grid(summed[c] / count, ref, 1.0 if c == 0 else 0.0) * (count / total)
    for item in saved:
        full += item.probabilities.astype(np.float32) / total
    labels = full.argmax(0).astype(_label_dtype(num_classes))
    return labels, (full if keep_probabilities else None)


def default_probability_path(label_path: str | Path) -> Path:
    """``case.nii.gz`` -> ``case.probabilities.npz`` beside it."""
    path = Path(label_path)
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(f"{name}.probabilities{PROBABILITY_SUFFIX}")


def check_probability_path(path: str | Path, overwrite: bool = False) -> Path:
    """Fail early (before any work) on a name not ending in .npz, an existing file or an unwritable folder."""
    path = Path(path)
    if path.suffix.lower() != PROBABILITY_SUFFIX or path.is_dir():
        raise InvalidInput(f"probability output {path}: give a file name ending in {PROBABILITY_SUFFIX}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"output {path} already exists; pass --overwrite to replace it")
    check_writable(path)
    return path


def save_probabilities(
    path: str | Path,
    probabilities: np.ndarray,
    labels: Sequence[dict[str, Any]],
    grid: sitk.Image,
    members: Sequence[str],
    overwrite: bool = False,
) -> Path:
    """Write the probability file described in the module docstring (atomically)."""
    path = check_probability_path(path, overwrite)
    if probabilities.shape[1:] != tuple(reversed(grid.GetSize())):
        raise InvalidInput(f"probabilities {probabilities.shape} do not match the grid {grid.GetSize()}")
    with safe_write(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                probabilities=probabilities.astype(np.float16),
                labels=np.array(json.dumps(list(labels))),
                members=np.array(json.dumps(list(members))),
                size=np.asarray(grid.GetSize(), dtype=np.int64),
                spacing=np.asarray(grid.GetSpacing(), dtype=np.float64),
                origin=np.asarray(grid.GetOrigin(), dtype=np.float64),
                direction=np.asarray(grid.GetDirection(), dtype=np.float64),
            )
    return path


def load_probabilities(path: str | Path) -> SavedProbabilities:
    """Read a probability file; a file that is not one is refused with a one-line error naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            probabilities = data["probabilities"]
            labels = json.loads(str(data["labels"]))
            members = json.loads(str(data["members"]))
            size = [int(v) for v in data["size"]]
            spacing, origin = data["spacing"].tolist(), data["origin"].tolist()
            direction = data["direction"].tolist()
    except (OSError, KeyError, ValueError, EOFError) as err:
        raise InvalidInput(
            f"{path} is not a probability file written by `segment --save-probabilities` ({err})"
        ) from None
    if probabilities.ndim != 4 or probabilities.shape[1:] != tuple(reversed(size)):
        raise InvalidInput(
            f"{path}: probabilities of shape {probabilities.shape} do not match the grid {size}"
        )
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing(spacing)
    grid.SetOrigin(origin)
    grid.SetDirection(direction)
    return SavedProbabilities(probabilities, labels, grid, members, path)


def check_same_grid(saved: SavedProbabilities, image: sitk.Image, source: str) -> None:
    """Refuse a probability file computed on another grid than ``image``'s."""
    same = (
        saved.grid.GetSize() == image.GetSize()
        and np.allclose(saved.grid.GetSpacing(), image.GetSpacing(), atol=1e-5)
        and np.allclose(saved.grid.GetOrigin(), image.GetOrigin(), atol=1e-4)
        and np.allclose(saved.grid.GetDirection(), image.GetDirection(), atol=1e-6)
    )
    if not same:
        raise InvalidInput(
            f"probability file {saved.path} was computed on another grid (size {saved.grid.GetSize()}, "
            f"spacing {saved.grid.GetSpacing()}) than {source} (size {image.GetSize()}, spacing "
            f"{image.GetSpacing()})"
        )
