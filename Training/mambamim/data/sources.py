"""Where training scans come from: a folder of scans, paired image/label folders, or an MSD dataset.json.

Every function returns plain data lists (``[{"image": path, "label": path?}, ...]``) so the same MONAI
pipelines serve all three layouts. Reading happens later (``mambamim.data.dataset``), where unreadable
files are reported and skipped.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mambamim.data.imageio import READ_SUFFIXES, is_dicom_folder
from mambamim.data.label_checks import same_file
from mambamim.data.labels import LabelError, parse_labels
from mambamim.data.nnunet_raw import (
    find_nnunet_dataset,
    is_name_to_value,
    labels_from_nnunet,
    nnunet_unlabelled_items,
    read_nnunet_dataset,
)
from mambamim.errors import InvalidInput


def is_scan_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(READ_SUFFIXES)


def _has_dicom_magic(path: Path) -> bool:
    # DICOM Part 10 files carry "DICM" after a 128-byte preamble: a cheap test before asking GDCM.
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def find_scans(folder: str | os.PathLike) -> list[Path]:
    """All scans under ``folder`` (recursive): volume files plus one entry per DICOM series folder.

    A folder holding DICOM files counts as one series (its volume files, if any, count separately).
    The list is sorted so that runs are reproducible whatever the file system order.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"scan folder {root} does not exist or is not a folder")
    scans: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        here = Path(dirpath)
        files = [here / name for name in sorted(filenames) if not name.startswith(".")]
        scans.extend(p for p in files if is_scan_file(p))
        if any(_has_dicom_magic(p) for p in files if not is_scan_file(p)) and is_dicom_folder(here):
            scans.append(here)
    return sorted(scans)


def load_dataset_json(path: str | os.PathLike, key: str = "training", labelled: bool = True) -> list[dict]:
    """Data list ``key`` of an MSD-style ``dataset.json`` (MONAI ``load_decathlon_datalist``).

    Paths are resolved against the json's folder; a missing list or file is a clear error.
    """
    from monai.data import load_decathlon_datalist

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    try:
        items = load_decathlon_datalist(str(path), is_segmentation=labelled, data_list_key=key)
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read data list {key!r}: {exc}") from exc
    # Unlabelled lists (MSD "test") are plain strings; MONAI turns them into {"image": ...}.
    return [{k: v for k, v in item.items() if k in ("image", "label")} for item in items]


def has_list(path: str | os.PathLike, key: str) -> bool:
    """True when dataset.json ``path`` has a non-empty list ``key`` (e.g. its own "validation" split)."""
    with open(path, encoding="utf-8") as f:
        content = json.load(f)
    return bool(content.get(key))


def paired_folders(image_dir: str | os.PathLike, label_dir: str | os.PathLike) -> list[dict]:
    """Pair scans in ``image_dir`` with label maps of the same name in ``label_dir``.

    nnU-Net style ``case_0000.nii.gz`` images pair with ``case.nii.gz`` labels. An image without a label
    is an error naming it: silently dropping cases would change the split.
    """
    if same_file(image_dir, label_dir):
        raise ValueError(f"--labels-dir {label_dir} is the image folder itself; give the label maps' folder")
    labels = {_case_name(p): p for p in find_scans(label_dir)}
    pairs = []
    for image in find_scans(image_dir):
        name = _case_name(image)
        label = labels.get(name) or labels.get(name.removesuffix("_0000"))
        if label is None:
            raise FileNotFoundError(f"no label map for image {image} in {label_dir}")
        pairs.append({"image": str(image), "label": str(label)})
    if not pairs:
        raise FileNotFoundError(f"no scans found in {image_dir}")
    return pairs


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in sorted(READ_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def scan_list(source: str | os.PathLike) -> list[dict]:
    """Unlabelled scans for pre-training: a folder, a single scan, a dataset.json (all its lists), or an
    nnU-Net v2 raw dataset (imagesTr and imagesTs)."""
    nnunet = find_nnunet_dataset(source)
    if nnunet is not None:
        return nnunet_unlabelled_items(read_nnunet_dataset(nnunet))
    path = Path(source)
    if path.suffix.lower() == ".json":
        items: list[dict] = []
        for key in ("training", "validation", "test"):
            if has_list(path, key):
                items += [{"image": it["image"]} for it in load_dataset_json(path, key, labelled=False)]
        if not items:
            raise InvalidInput(f"{path}: no 'training', 'validation' or 'test' entries")
        return items
    if is_scan_file(path):
        return [{"image": str(path)}]
    scans = find_scans(path)
    if not scans:
        raise FileNotFoundError(
            f"no scans found in {path} (looked for {', '.join(READ_SUFFIXES)} files and DICOM series folders)"
        )
    return [{"image": str(p)} for p in scans]


def kfold_split(items: Sequence[Any], folds: int = 5, fold: int = 0, seed: int = 0) -> tuple[list, list]:
    """(train, validation) for ``fold`` of a shuffled ``folds``-fold split with a fixed ``seed``.

    With a single case the case is used for both (a smoke/demo setting, stated in the run log).
    """
    if folds < 2:
        raise InvalidInput(f"--folds must be at least 2, got {folds}")
    if not 0 <= fold < folds:
        raise InvalidInput(f"--fold must be in [0, {folds - 1}], got {fold}")
    items = list(items)
    if len(items) == 1:
        return items, items
    if len(items) < folds:
        raise InvalidInput(f"{len(items)} cases cannot be split into {folds} folds; use --folds {len(items)}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    val_idx = set(order[fold::folds])
    train = [it for i, it in enumerate(items) if i not in val_idx]
    val = [it for i, it in enumerate(items) if i in val_idx]
    return train, val


def load_label_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Foreground labels ``[{value, name, color}]`` from a dataset.json (``labels``) or a JSON file.

    The file holds ``{"1": "spleen", ...}`` (MSD style, background optional), nnU-Net v2's
    ``{"background": 0, "spleen": 1}``, or a list of
    ``{"value", "name", "color"?, "snomed"?}`` records; missing colours get the package palette.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read label names from {path}: {exc}") from exc
    table = content.get("labels", content) if isinstance(content, dict) else content
    if is_name_to_value(table):  # nnU-Net v2: {"background": 0, "liver": 1}
        table = labels_from_nnunet(table, path)
    try:
        return parse_labels(table)
    except LabelError as exc:
        raise InvalidInput(f"{path}: {exc}") from None
