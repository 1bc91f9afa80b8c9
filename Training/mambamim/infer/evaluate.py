"""Per-case, per-class Dice, Normalized Surface Dice, HD95 (MONAI metrics, millimetres) and volumes (mL)
of predicted vs reference label maps.

Every (case, class) pair gets a status instead of a made-up number when a score is undefined:

- ``present``: in both maps; Dice, NSD and HD95 are computed.
- ``absent``: in neither map; no Dice, NSD or HD95 (a 1.0 or 0.0 here would be fiction).
- ``missing_in_pred``: only in the reference (missed organ); Dice and NSD 0, HD95 undefined.
- ``missing_in_ref``: only in the prediction (false positive organ); Dice and NSD 0, HD95 undefined.

NSD (Nikolov et al. 2021, MONAI ``compute_surface_dice``) is the fraction of both boundaries lying within
a tolerance (mm) of the other; ``DEFAULT_NSD_TOLERANCE_MM`` unless set per class. Cases are named after
the prediction file; in folder mode, a prediction without a reference (and a reference without a
prediction) is reported as a row of status ``no_reference`` (``no_prediction``), never silently dropped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mambamim.data.imageio import READ_SUFFIXES, image_suffix, is_dicom_folder, read_image, write_csv
from mambamim.errors import InvalidInput

CSV_FIELDS = (
    "case", "value", "name", "status", "dice", "nsd", "hd95_mm",
    "ref_voxels", "pred_voxels", "ref_ml", "pred_ml", "prediction", "reference",
)  # fmt: skip
UNMATCHED = ("no_reference", "no_prediction")
# 2 mm: within the boundary disagreement of human raters for abdominal organs on 1-3 mm grids; FLARE uses
# 1 mm, the Decathlon per-task values. Set per class with nsd_tolerance={name or value: mm}.
DEFAULT_NSD_TOLERANCE_MM = 2.0
NsdTolerance = float | Mapping[str | int, float]
_GEOMETRY_TOLERANCE = 1e-4  # mm / direction cosine: float32 NIfTI headers round at ~1e-6


def compare_label_maps(
    pred: sitk.Image,
    ref: sitk.Image,
    labels: Sequence[dict[str, Any]],
    *,
    hd95: bool = True,
    case: str = "",
    nsd_tolerance: NsdTolerance = DEFAULT_NSD_TOLERANCE_MM,
) -> list[dict[str, Any]]:
    """One row per label of ``labels`` (records with ``value`` and ``name``); see the module docstring.

    ``nsd_tolerance``: millimetres for every class, or ``{name or value: mm}`` (others get the default).
    """
    check_same_grid(pred, ref, f"case {case}: prediction" if case else "prediction")
    pred_a = sitk.GetArrayViewFromImage(pred)
    ref_a = sitk.GetArrayViewFromImage(ref)
    spacing_zyx = tuple(reversed(pred.GetSpacing()))
    voxel_ml = float(np.prod(pred.GetSpacing())) / 1000.0
    rows = []
    for label in labels:
        value = int(label["value"])
        p, r = pred_a == value, ref_a == value
        n_p, n_r = int(p.sum()), int(r.sum())
        row: dict[str, Any] = {
            "case": case,
            "value": value,
            "name": label["name"],
            "dice": None,
            "nsd": None,
            "hd95_mm": None,
            "ref_voxels": n_r,
            "pred_voxels": n_p,
            "ref_ml": n_r * voxel_ml,
            "pred_ml": n_p * voxel_ml,
        }
        if n_p == 0 and n_r == 0:
            row["status"] = "absent"
        elif n_p == 0 or n_r == 0:
            row["status"] = "missing_in_pred" if n_p == 0 else "missing_in_ref"
            row["dice"] = row["nsd"] = 0.0
        else:
            row["status"] = "present"
            tolerance = tolerance_for(label, nsd_tolerance)
            row["dice"], row["nsd"], row["hd95_mm"] = _scores(p, r, spacing_zyx, hd95, tolerance)
        rows.append(row)
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per class: mean ± sd of Dice over cases where the class is in either map, HD95 where in both."""
    by_value: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] not in UNMATCHED:
            by_value.setdefault(row["value"], []).append(row)
    summary = []
    for value in sorted(by_value):
        group = by_value[value]
        dice = [r["dice"] for r in group if r["dice"] is not None]
        hd = [r["hd95_mm"] for r in group if r["hd95_mm"] is not None]
        nsd = [r["nsd"] for r in group if r.get("nsd") is not None]
        summary.append(
            {
                "value": value,
                "name": group[0]["name"],
                "cases": len(group),
                "scored": len(dice),
                "absent": sum(r["status"] == "absent" for r in group),
                "dice_mean": float(np.mean(dice)) if dice else None,
                "dice_sd": float(np.std(dice)) if dice else None,
                "hd95_mean": float(np.mean(hd)) if hd else None,
                "hd95_sd": float(np.std(hd)) if hd else None,
                "nsd_mean": float(np.mean(nsd)) if nsd else None,
                "nsd_sd": float(np.std(nsd)) if nsd else None,
            }
        )
    return summary


def format_summary(summary: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table: class, Dice mean ± sd, HD95 mean ± sd (mm), cases scored / absent."""

    def pm(mean: float | None, sd: float | None, digits: int) -> str:
        return "absent" if mean is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"

    name_width = max([len("class"), *(len(s["name"]) for s in summary)])
    lines = [
        f"{'class':<{name_width}}  {'Dice':>15}  {'NSD':>15}  {'HD95 (mm)':>15}  {'scored':>6}  {'absent':>6}"
    ]
    for s in summary:
        nsd = pm(s["nsd_mean"], s["nsd_sd"], 3) if s.get("nsd_mean") is not None else "-"
        lines.append(
            f"{s['name']:<{name_width}}  {pm(s['dice_mean'], s['dice_sd'], 3):>15}  {nsd:>15}  "
            f"{pm(s['hd95_mean'], s['hd95_sd'], 1) if s['hd95_mean'] is not None else '-':>15}  "
            f"{s['scored']:>6}  {s['absent']:>6}"
        )
    dice = [s["dice_mean"] for s in summary if s["dice_mean"] is not None]
    if dice:
        lines.append(f"{'mean over classes':<{name_width}}  {np.mean(dice):>15.3f}")
    return "\n".join(lines)


def format_dice_table(rows: Sequence[dict[str, Any]]) -> str:
    """Per-organ Dice of one case (``segment --reference``); undefined scores show their status."""
    width = max([len("organ"), *(len(r["name"]) for r in rows)])
    lines = [f"{'organ':<{width}}  {'Dice':>6}  status"]
    for r in rows:
        dice = "-" if r["dice"] is None else f"{r['dice']:.3f}"
        lines.append(f"{r['name']:<{width}}  {dice:>6}  {r['status']}")
    scored = [r["dice"] for r in rows if r["dice"] is not None]
    if scored:
        lines.append(f"{'mean':<{width}}  {np.mean(scored):>6.3f}  over {len(scored)} organs")
    return "\n".join(lines)


def match_cases(
    pred: str | Path, ref: str | Path
) -> tuple[list[tuple[str, Path, Path]], list[Path], list[Path]]:
    """``(pairs, predictions without reference, references without prediction)``.

    Pairs are ``(case, pred_path, ref_path)``, the case named after the prediction file: one pair for two
    files, matched by name for two folders, where a prediction named ``<name>_seg.<ext>`` (what batch
    ``segment`` writes) matches reference ``<name>``. Refuses folders in which nothing matches.
    """
    pred, ref = Path(pred), Path(ref)
    for path, what in ((pred, "--pred"), (ref, "--ref")):
        if not path.exists():
            raise FileNotFoundError(f"{what} {path} does not exist")
    if not (pred.is_dir() and not is_dicom_folder(pred)) and not (ref.is_dir() and not is_dicom_folder(ref)):
        return [(_case_name(pred), pred, ref)], [], []
    if not (pred.is_dir() and ref.is_dir()):
        raise InvalidInput(f"--pred {pred} and --ref {ref} must both be files or both be folders")
    refs = {_case_name(r): r for r in _label_files(ref)}
    pairs, no_reference, used = [], [], set()
    for pred_path in _label_files(pred):
        name = _case_name(pred_path)
        key = name if name in refs else name[: -len("_seg")] if name.endswith("_seg") else None
        if key in refs and key not in used:
            used.add(key)
            pairs.append((name, pred_path, refs[key]))
        else:
            no_reference.append(pred_path)
    no_prediction = [path for key, path in refs.items() if key not in used]
    if not pairs:
        raise InvalidInput(
            f"no prediction in {pred} matches a reference in {ref} "
            f"({len(no_reference)} prediction(s), {len(no_prediction)} reference(s))"
        )
    return pairs, no_reference, no_prediction


def pair_cases(pred: str | Path, ref: str | Path) -> list[tuple[str, Path, Path]]:
    """The matched ``(case, pred_path, ref_path)`` of :func:`match_cases`."""
    return match_cases(pred, ref)[0]


def evaluate_paths(
    pred: str | Path,
    ref: str | Path,
    labels: Sequence[dict[str, Any]] | None = None,
    nsd_tolerance: NsdTolerance = DEFAULT_NSD_TOLERANCE_MM,
) -> list[dict[str, Any]]:
    """Rows for every case (see :func:`match_cases`), then one row per unmatched file (status
    ``no_reference`` / ``no_prediction``); ``labels`` default to every value found."""
    pairs, no_reference, no_prediction = match_cases(pred, ref)
    rows = []
    for case, pred_path, ref_path in pairs:
        pred_img = read_image(pred_path, allow_constant=True)
        ref_img = read_image(ref_path, allow_constant=True)
        table = labels if labels is not None else _labels_found(pred_img, ref_img)
        for row in compare_label_maps(pred_img, ref_img, table, case=case, nsd_tolerance=nsd_tolerance):
            rows.append({**row, "prediction": str(pred_path), "reference": str(ref_path)})
    unmatched = (("no_reference", no_reference, "prediction"), ("no_prediction", no_prediction, "reference"))
    for status, paths, key in unmatched:
        rows.extend(
            {"case": _case_name(p), "value": None, "name": "", "status": status, key: str(p)} for p in paths
        )
    return rows


def parse_nsd_tolerance(items: Sequence[str]) -> NsdTolerance:
    """``["2", "liver=3", "5=1"]`` -> ``{"default": 2.0, "liver": 3.0, 5: 1.0}``; one number: a float."""
    table: dict[str | int, float] = {}
    for item in items:
        key, _, value = item.rpartition("=")
        try:
            mm = float(value)
        except ValueError:
            raise InvalidInput(f"NSD tolerance {item!r}: expected MM or CLASS=MM, MM a number") from None
        if not mm > 0:
            raise InvalidInput(f"NSD tolerance {item!r}: must be positive millimetres")
        table[int(key) if key.isdigit() else (key or "default")] = mm
    return table["default"] if list(table) == ["default"] else table


def tolerance_for(label: dict[str, Any], tolerance: NsdTolerance) -> float:
    """The NSD tolerance (mm) of ``label``: by name, then by value, else the default."""
    if not isinstance(tolerance, Mapping):
        return float(tolerance)
    for key in (label["name"], int(label["value"]), str(label["value"])):
        if key in tolerance:
            return float(tolerance[key])
    return float(tolerance.get("default", DEFAULT_NSD_TOLERANCE_MM))


def write_rows_csv(rows: Sequence[dict[str, Any]], path: str | Path, overwrite: bool = False) -> Path:
    """Write rows atomically; undefined scores are empty cells (the status column says why)."""
    cells = ({k: _cell(row.get(k)) for k in CSV_FIELDS} for row in rows)
    return write_csv(path, CSV_FIELDS, cells, overwrite=overwrite)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
    return value


def _scores(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], hd95: bool, tolerance_mm: float
) -> tuple[float, float, float | None]:
    """Dice, NSD at ``tolerance_mm`` and (when asked for) HD95 of two non-empty binary masks."""
    import torch  # here, not at import: the command-line help reads this module's defaults without torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    # Crop to the union's bounding box (+1 voxel) so HD95's distance transforms stay small.
    union = np.argwhere(pred | ref)
    lo = np.maximum(union.min(axis=0) - 1, 0)
    hi = union.max(axis=0) + 2
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    p = torch.from_numpy(np.ascontiguousarray(pred[box]))[None, None].float()
    r = torch.from_numpy(np.ascontiguousarray(ref[box]))[None, None].float()
    dice = float(compute_dice(p, r, include_background=True)[0, 0])
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        nsd = compute_surface_dice(p, r, [tolerance_mm], include_background=True, spacing=list(spacing))
        if not hd95:
            return dice, float(nsd[0, 0]), None
        hd = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(spacing))
    return dice, float(nsd[0, 0]), float(hd[0, 0])


def check_same_grid(image: sitk.Image, ref: sitk.Image, where: str = "prediction") -> None:
    """Raise ``ValueError`` unless ``image`` and the reference share size, spacing, origin and direction."""
    for what, a, b in (
        ("size", image.GetSize(), ref.GetSize()),
        ("spacing", image.GetSpacing(), ref.GetSpacing()),
        ("origin", image.GetOrigin(), ref.GetOrigin()),
        ("direction", image.GetDirection(), ref.GetDirection()),
    ):
        if not np.allclose(a, b, atol=_GEOMETRY_TOLERANCE, rtol=0):
            raise InvalidInput(
                f"{where} {what} {tuple(round(v, 5) for v in a)} differs from the reference's "
                f"{tuple(round(v, 5) for v in b)}; both must be on the same grid"
            )


def _labels_found(*images: sitk.Image) -> list[dict[str, Any]]:
    values = sorted(set().union(*(np.unique(sitk.GetArrayViewFromImage(i)).tolist() for i in images)) - {0})
    return [{"value": int(v), "name": f"label_{int(v)}"} for v in values]


def _label_files(folder: Path) -> list[Path]:
    """Label maps in ``folder``; a ``<name>.seg.nrrd`` beside label map ``<name>`` is the Slicer copy
    that ``segment`` writes with it, not another case."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and image_suffix(p) in READ_SUFFIXES)
    names = {_case_name(p) for p in files}
    return [
        p
        for p in files
        if not (p.name.lower().endswith(".seg.nrrd") and p.name[: -len(".seg.nrrd")] in names)
    ]


def _case_name(path: Path) -> str:
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name
