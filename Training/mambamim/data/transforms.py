"""MONAI pipelines for pre-training and fine-tuning (MambaMIM §4.1 / Swin UNETR BTCV recipe).

Each pipeline is split into a deterministic part (load, RAS, resample, intensity, foreground crop, pad),
which ``mambamim.data.dataset`` caches once per volume, and a random part (crops, flips, ...), which it
re-seeds per (epoch, sample) so that data are a pure function of the seed (exact ``--resume``).

Arrays follow MONAI's convention: channel first, then the image index axes (i, j, k); after
``Orientationd("RAS")`` axis 0 runs left->right, 1 posterior->anterior, 2 inferior->superior.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropSamplesd,
    Spacingd,
    SpatialPadd,
)

from mambamim.data.intensity import normalize_intensity, validate_intensity_spec

# SimpleITK physical space is LPS; MONAI/NIfTI affines are RAS.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def image_to_metatensor(image: Any, filename: str) -> MetaTensor:
    """SimpleITK image -> channel-first MetaTensor (1, i, j, k) carrying its RAS affine."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (k, j, i) -> (i, j, k)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    affine = _LPS_TO_RAS @ affine
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    return MetaTensor(tensor, affine=torch.as_tensor(affine), meta={"filename_or_obj": filename})


class LoadScand(MapTransform):
    """Read NIfTI / NRRD / MGH / DICOM-folder scans with ``mambamim.data.imageio.read_image``.

    The same reader as inference, so that training and ``mambamim segment`` see identical voxels and
    geometry; it refuses 2-D/4-D, empty, constant or NaN volumes with a message naming the file.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from mambamim.data.imageio import read_image

        d = dict(data)
        for key in self.key_iterator(d):
            # Label maps may legitimately be all background (a negative case).
            image = read_image(d[key], allow_constant=key == "label")
            d[key] = image_to_metatensor(image, str(d[key]))
        return d


class ApplyIntensitySpecd(MapTransform):
    """Apply a ``mambamim.data.intensity`` spec (CT window, MRI z-score, nnU-Net CT) to ``keys``.

    Named apart from MONAI's ``NormalizeIntensityd`` (always a z-score): this one does what the spec says.
    """

    def __init__(self, keys: KeysCollection, spec: dict[str, Any]) -> None:
        super().__init__(keys)
        self.spec = validate_intensity_spec(spec)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            out = normalize_intensity(torch.as_tensor(img).as_subclass(torch.Tensor), self.spec)
            d[key] = MetaTensor(out, meta=img.meta) if isinstance(img, MetaTensor) else out
        return d


def foreground_fn(spec: dict[str, Any]):
    """Body mask after normalisation: above the window floor (CT) or non-zero (z-scored MRI)."""
    spec = validate_intensity_spec(spec)
    if spec["type"] == "window":
        return _above_zero
    if spec["type"] == "clip_zscore":
        return functools.partial(_above, (spec["lower"] - spec["mean"]) / spec["std"])
    return _nonzero


def _above_zero(x):
    return x > 0


def _above(floor: float, x):
    return x > floor


def _nonzero(x):
    return x != 0


def _geometry(keys: list[str], spacing: Sequence[float], intensity: dict, roi: Sequence[int]) -> list:
    has_label = "label" in keys
    return [
        LoadScand(keys),
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys, pixdim=spacing, mode=("bilinear", "nearest") if has_label else "bilinear"),
        ApplyIntensitySpecd("image", intensity),
        CropForegroundd(keys, source_key="image", select_fn=foreground_fn(intensity), allow_smaller=True),
        # Volumes smaller than the crop (after the foreground crop) are padded with 0, i.e. the window
        # floor (air) for CT / background for z-scored MRI, so every crop is full size.
        SpatialPadd(keys, spatial_size=roi),
        EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False),
    ]


def pretrain_transforms(
    roi: Sequence[int], num_samples: int, spacing: Sequence[float], intensity: dict
) -> tuple[Compose, Compose]:
    """(deterministic, random) parts: ``num_samples`` random ``roi`` crops per volume, random flips."""
    deterministic = Compose(_geometry(["image"], spacing, intensity, roi))
    random = Compose(
        [
            RandSpatialCropSamplesd("image", roi_size=roi, num_samples=num_samples, random_size=False),
            *(RandFlipd("image", prob=0.2, spatial_axis=axis) for axis in range(3)),
            EnsureTyped("image", data_type="tensor", track_meta=False),
        ]
    )
    return deterministic, random


def finetune_transforms(
    roi: Sequence[int], num_samples: int, spacing: Sequence[float], intensity: dict
) -> tuple[Compose, Compose]:
    """(deterministic, random) training parts: pos/neg 1:1 crops, Swin UNETR augmentations."""
    keys = ["image", "label"]
    deterministic = Compose(_geometry(keys, spacing, intensity, roi))
    random = Compose(
        [
            RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=roi,
                pos=1.0,
                neg=1.0,
                num_samples=num_samples,
                image_key="image",
                image_threshold=0.0,
            ),
            *(RandFlipd(keys, prob=0.1, spatial_axis=axis) for axis in range(3)),
            RandRotate90d(keys, prob=0.1, max_k=3),
            RandScaleIntensityd("image", factors=0.1, prob=0.1),
            RandShiftIntensityd("image", offsets=0.1, prob=0.1),
            EnsureTyped(keys, data_type="tensor", track_meta=False),
        ]
    )
    return deterministic, random


def validation_transforms(spacing: Sequence[float], intensity: dict, roi: Sequence[int]) -> Compose:
    """Whole (foreground-cropped) volumes for sliding-window validation."""
    return Compose(_geometry(["image", "label"], spacing, intensity, roi))
