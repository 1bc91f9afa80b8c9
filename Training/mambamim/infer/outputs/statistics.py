"""Per-organ statistics of a label map over its scan, as TotalSegmentator's ``--statistics``.

For every label of the card: voxel count, volume in millilitres (voxel count × the voxel volume from the
image spacing, mm³ / 1000) and the mean and (population) standard deviation of the scan's intensities
inside the organ, in the scan's own units (HU for CT). An organ the label map does not contain has
0 voxels, 0 mL and no intensity (``None`` in JSON, an empty cell in CSV), never a made-up number.

Written as CSV (one row per organ) and JSON (``{name: {value, voxels, volume_ml, intensity_mean,
intensity_std}}``, TotalSegmentator's layout with our extra fields), both atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mambamim.data.imageio import write_csv
from mambamim.safe_write import safe_write

FIELDS = ("value", "name", "voxels", "volume_ml", "intensity_mean", "intensity_std")


def voxel_volume_ml(image: sitk.Image) -> float:
    """Volume of one voxel in millilitres (1 mL = 1000 mm³)."""
    return float(np.prod(image.GetSpacing())) / 1000.0


def label_statistics(
    label_map: sitk.Image, image: sitk.Image | None, labels: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per label (``value``, ``name`` records): voxels, volume in mL, intensity mean and std.

    ``image`` is the scan on the label map's exact grid (``None``: volumes only). Intensities are the
    scan's stored values (float64 sums, so large organs do not lose precision).
    """
    from mambamim.infer.evaluate import check_same_grid

    labels_a = sitk.GetArrayViewFromImage(label_map)
    values_a = None
    if image is not None:
        check_same_grid(label_map, image, where="label map")
        values_a = sitk.GetArrayViewFromImage(image)
    per_voxel = voxel_volume_ml(label_map)
    rows = []
    for label in labels:
        inside = labels_a == int(label["value"])
        count = int(inside.sum())
        row: dict[str, Any] = {
            "value": int(label["value"]),
            "name": label["name"],
            "voxels": count,
            "volume_ml": count * per_voxel,
            "intensity_mean": None,
            "intensity_std": None,
        }
        if values_a is not None and count:
            organ = values_a[inside].astype(np.float64)
            row["intensity_mean"] = float(organ.mean())
            row["intensity_std"] = float(organ.std())
        rows.append(row)
    return rows


def statistics_paths(path: str | Path) -> tuple[Path, Path]:
    """(CSV, JSON) for a requested statistics path: ``x.csv`` or ``x.json`` gives both ``x.*``."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".csv", ".json") else path
    return stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".json")


def write_statistics(
    rows: Sequence[dict[str, Any]], path: str | Path, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``rows`` as CSV and JSON (see :func:`statistics_paths`); returns both paths."""
    csv_path, json_path = statistics_paths(path)
    if json_path.exists() and not overwrite:
        raise FileExistsError(f"output {json_path} already exists; pass --overwrite to replace it")
    cells = ({k: "" if row[k] is None else row[k] for k in FIELDS} for row in rows)
    write_csv(csv_path, FIELDS, cells, overwrite=overwrite)
    document = {row["name"]: {k: row[k] for k in FIELDS if k != "name"} for row in rows}
    with safe_write(json_path) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
    return csv_path, json_path
