"""nnU-Net v2 raw datasets read as they are: ``DatasetXXX_Name/{dataset.json, imagesTr, labelsTr, imagesTs}``.

nnU-Net v2's ``dataset.json`` (nnU-Net documentation, "dataset_format.md") holds ``channel_names``
(``{"0": "CT"}``), ``labels`` as *name -> value* (``{"background": 0, "liver": 1}``; region-based training
writes a list of values per name), ``numTraining`` and ``file_ending``. Training images are
``imagesTr/{case}_{channel:04d}{file_ending}`` and their labels ``labelsTr/{case}{file_ending}``.

A dataset is named by its folder, its ``dataset.json``, its full name ``Dataset001_Name`` or its ID
(``1``, ``001``, ``Dataset001``) under the ``nnUNet_raw`` environment variable, as nnU-Net's own commands do.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mambamim.errors import InvalidInput

NNUNET_RAW_ENV = "nnUNet_raw"
_REQUIRED_KEYS = ("channel_names", "labels", "file_ending")
_DATASET_ID = re.compile(r"^(?:Dataset)?(\d{1,3})$")


class NnUNetDatasetError(InvalidInput):
    """An nnU-Net raw dataset that cannot be used as it is; the message names the file."""


@dataclass(frozen=True)
class NnUNetDataset:
    folder: Path
    channel_names: dict[str, str]
    labels: dict[str, Any]  # name -> value, as in dataset.json
    file_ending: str
    num_training: int | None

    @property
    def modality(self) -> str:
        """ "CT" when the (single) channel is CT, else "MR" (nnU-Net z-scores every non-CT channel)."""
        return "CT" if next(iter(self.channel_names.values())).upper() == "CT" else "MR"


def is_nnunet_dataset_json(content: Any) -> bool:
    """nnU-Net v2 json: channel_names + labels + file_ending, and no MSD-style "training" list."""
    return (
        isinstance(content, Mapping)
        and all(k in content for k in _REQUIRED_KEYS)
        and not content.get("training")
    )


def find_nnunet_dataset(data: str | os.PathLike) -> Path | None:
    """The dataset folder ``data`` names (folder, its dataset.json, ``Dataset001_Name`` or an ID under
    ``$nnUNet_raw``), or None when ``data`` is not an nnU-Net v2 raw dataset (an MSD json, a scan folder)."""
    path = Path(data)
    if path.is_file() and path.name == "dataset.json":
        path = path.parent
    if path.is_dir():
        return path if _has_nnunet_json(path) else None
    if path.exists() or len(path.parts) != 1:
        return None
    raw = os.environ.get(NNUNET_RAW_ENV)
    if not raw or not Path(raw).is_dir():
        return None
    name = str(data)
    match = _DATASET_ID.match(name)
    if match:
        prefix = f"Dataset{int(match.group(1)):03d}_"
        found = sorted(p for p in Path(raw).iterdir() if p.is_dir() and p.name.startswith(prefix))
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise NnUNetDatasetError(
                f"dataset ID {name} is ambiguous under ${NNUNET_RAW_ENV}={raw}: {names}"
            )
        candidate = found[0] if found else None
    else:
        candidate = Path(raw) / name
    if candidate is None or not candidate.is_dir():
        raise NnUNetDatasetError(f"no nnU-Net dataset {name!r} under ${NNUNET_RAW_ENV}={raw}")
    if not _has_nnunet_json(candidate):
        raise NnUNetDatasetError(f"{candidate} has no nnU-Net v2 dataset.json")
    return candidate


def _has_nnunet_json(folder: Path) -> bool:
    path = folder / "dataset.json"
    if not path.is_file():
        return False
    return is_nnunet_dataset_json(_read_json(path))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NnUNetDatasetError(f"cannot read {path}: {exc}") from None


def read_nnunet_dataset(folder: str | os.PathLike) -> NnUNetDataset:
    """Parse and check ``folder/dataset.json``: one input channel, integer labels with background 0."""
    folder = Path(folder)
    path = folder / "dataset.json"
    content = _read_json(path)
    missing = [k for k in _REQUIRED_KEYS if k not in content]
    if missing:
        raise NnUNetDatasetError(f"{path}: missing {', '.join(missing)} (not an nnU-Net v2 dataset.json)")
    channels = {str(k): str(v) for k, v in dict(content["channel_names"]).items()}
    if len(channels) != 1:
        raise NnUNetDatasetError(
            f"{path}: {len(channels)} input channels ({', '.join(channels.values())}); mambamim models take "
            "one channel, so multi-channel datasets are not supported: make one dataset per channel"
        )
    labels = dict(content["labels"])
    labels_from_nnunet(labels, path)  # the checks, before any training
    ending = str(content["file_ending"])
    number = content.get("numTraining")
    return NnUNetDataset(folder, channels, labels, ending, int(number) if number is not None else None)


def labels_from_nnunet(labels: Mapping[str, Any], where: str | os.PathLike) -> dict[str, str]:
    """nnU-Net's name -> value table as the value -> name table the rest of mambamim reads."""
    regions = [name for name, value in labels.items() if isinstance(value, (list, tuple))]
    if regions:
        raise NnUNetDatasetError(
            f"{where}: region-based labels ({', '.join(regions)}) are not supported: mambamim trains one "
            "softmax class per label value; list each label with a single integer value"
        )
    table: dict[str, str] = {}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise NnUNetDatasetError(f"{where}: label {name!r} has value {value!r}, expected an integer")
        if str(value) in table:
            raise NnUNetDatasetError(
                f"{where}: labels {table[str(value)]!r} and {name!r} share the value {value}"
            )
        table[str(value)] = str(name)
    if table.get("0") is None:
        raise NnUNetDatasetError(f"{where}: nnU-Net label tables need 'background': 0")
    return table


def is_name_to_value(labels: Any) -> bool:
    """True for nnU-Net's ``{"background": 0, "liver": 1}``; False for MSD's ``{"0": "background"}``."""
    return (
        isinstance(labels, Mapping)
        and bool(labels)
        and all(isinstance(v, (int, list, tuple)) and not isinstance(v, bool) for v in labels.values())
    )


def nnunet_training_items(dataset: NnUNetDataset) -> list[dict[str, str]]:
    """``[{"image", "label"}]`` from imagesTr / labelsTr; a case missing either side is an error naming it."""
    images_dir, labels_dir = dataset.folder / "imagesTr", dataset.folder / "labelsTr"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise NnUNetDatasetError(f"{dataset.folder}: no {folder.name} folder")
    ending = dataset.file_ending
    suffix = f"_0000{ending}"
    images = sorted(p for p in images_dir.iterdir() if p.name.endswith(ending) and not p.name.startswith("."))
    others = [p.name for p in images if not p.name.endswith(suffix)]
    if others:
        raise NnUNetDatasetError(
            f"{images_dir}: {others[0]} does not end in {suffix} (nnU-Net names images CASE_0000{ending})"
        )
    items = []
    for image in images:
        case = image.name[: -len(suffix)]
        label = labels_dir / f"{case}{ending}"
        if not label.is_file():
            raise NnUNetDatasetError(f"no label map {label} for image {image}")
        items.append({"image": str(image), "label": str(label)})
    if not items:
        raise NnUNetDatasetError(f"{images_dir}: no training images ending in {suffix}")
    cases = {Path(item["label"]).name for item in items}
    orphans = sorted(p.name for p in labels_dir.iterdir() if p.name.endswith(ending) and p.name not in cases)
    if orphans:
        case = orphans[0][: -len(ending)]
        raise NnUNetDatasetError(f"{labels_dir}: label map {orphans[0]} has no image {case}{suffix}")
    if dataset.num_training is not None and dataset.num_training != len(items):
        raise NnUNetDatasetError(
            f"{dataset.folder / 'dataset.json'}: numTraining is {dataset.num_training} but imagesTr holds "
            f"{len(items)} case(s)"
        )
    return items


def channel_warning(data: str | os.PathLike, intensity: Mapping[str, Any]) -> str | None:
    """A warning when an nnU-Net dataset's channel (CT or not) disagrees with the run's intensity setting:
    nnU-Net windows CT and z-scores everything else; a CT window on MR voxels trains on noise."""
    folder = find_nnunet_dataset(data)
    if folder is None:
        return None
    dataset = read_nnunet_dataset(folder)
    windowed = intensity.get("type") == "window"
    if (dataset.modality == "CT") == windowed:
        return None
    channel = next(iter(dataset.channel_names.values()))
    option = "ct" if dataset.modality == "CT" else "zscore"
    return (
        f"warning: {folder / 'dataset.json'} names its channel {channel!r} but this run normalises with "
        f"{dict(intensity)}; pass --intensity {option} as nnU-Net does"
    )


def nnunet_unlabelled_items(dataset: NnUNetDataset) -> list[dict[str, str]]:
    """Every image of imagesTr and imagesTs as ``{"image"}`` (pre-training needs no labels)."""
    items = [{"image": item["image"]} for item in nnunet_training_items(dataset)]
    test_dir = dataset.folder / "imagesTs"
    if test_dir.is_dir():
        suffix = f"_0000{dataset.file_ending}"
        items += [{"image": str(p)} for p in sorted(test_dir.iterdir()) if p.name.endswith(suffix)]
    return items
