"""DICOM Segmentation (SEG) of a label map, referencing the DICOM series it was computed from.

Written with ``highdicom``: a BINARY segmentation, one segment per organ present in the label map
(segment number = position in the card's label order among the organs present; the segment label is
the organ's name; category and type from :mod:`mambamim.infer.outputs.terminology`, the display colour
the card's), one frame per (segment, slice) where the organ has voxels. Every frame references the
source CT/MR image of its slice (Source Image Sequence), and the SEG joins the source's study, patient
and frame of reference, so a PACS or viewer shows it over the images it came from.

Before writing, the label map must lie exactly on the series' grid: each source slice's position
(Image Position Patient) must fall on one slice of the label map, with the same rows, columns and
orientation. Anonymised series that blanked the SOP Instance / Class UIDs in the dataset keep them in
the file meta header (Media Storage SOP Instance / Class UID, equal by the standard); those are used and
said so. A series without a Study Instance UID gets a new one for the SEG (said so): it then cannot be
grouped with the images in an archive.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mambamim.errors import InvalidInput
from mambamim.infer.outputs.terminology import label_terminology
from mambamim.safe_write import safe_write

logger = logging.getLogger(__name__)

_POSITION_TOLERANCE_MM = 0.05
_DIRECTION_TOLERANCE = 1e-3
_UID_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
_META_UIDS = (("SOPInstanceUID", "MediaStorageSOPInstanceUID"), ("SOPClassUID", "MediaStorageSOPClassUID"))


@dataclass
class DicomSegResult:
    """The written file, its segments (``[{number, value, name}]``), frames and notes."""

    path: Path
    segments: list[dict[str, Any]]
    frames: int
    source_instances: list[str]
    notes: list[str] = field(default_factory=list)


class DicomSegError(InvalidInput):
    """The label map and the DICOM series do not fit together, or the series cannot be referenced."""


def series_files(folder: str | Path) -> list[str]:
    """Files of the series that ``read_image`` reads from ``folder`` (the largest, by GDCM's grouping)."""
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise DicomSegError(f"folder {folder} holds no DICOM series")
    return max(
        (sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids), key=len
    )


def read_source_headers(folder: str | Path, notes: list[str]) -> list[Any]:
    """Headers (no pixel data) of the series in ``folder``, with blanked SOP UIDs restored from the file
    meta header and a new study UID where none is given (each said in ``notes``)."""
    import pydicom
    from highdicom import UID

    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in series_files(folder)]
    restored = 0
    for ds in datasets:
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # an empty value means the default repertoire
        meta = getattr(ds, "file_meta", None)
        for key, meta_key in _META_UIDS:
            if not str(ds.get(key, "") or "") and meta is not None and str(meta.get(meta_key, "") or ""):
                setattr(ds, key, meta.get(meta_key))
                restored += 1
        if not str(ds.get("SOPInstanceUID", "") or ""):
            raise DicomSegError(
                f"DICOM file {ds.filename} has no SOP Instance UID (not even in its file meta header): "
                "a DICOM SEG cannot reference it"
            )
    if restored:
        notes.append(f"{folder}: SOP Instance/Class UIDs blank in the datasets; used the file meta header's")
    for key in _UID_KEYS:
        values = {str(ds.get(key, "") or "") for ds in datasets}
        if len(values) > 1:
            raise DicomSegError(f"the DICOM series in {folder} mixes several {key}s: {sorted(values)[:3]}")
        if values == {""}:
            if key == "FrameOfReferenceUID":
                raise DicomSegError(
                    f"the DICOM series in {folder} has no Frame of Reference UID: "
                    "a SEG cannot be placed on it"
                )
            uid = UID()
            for ds in datasets:
                setattr(ds, key, uid)
            notes.append(
                f"{folder}: the series has no {key} (anonymised?); a new one stands in, so an archive "
                f"cannot match the DICOM SEG to the images by {key}"
            )
    return datasets


def slice_order(datasets: Sequence[Any], grid: sitk.Image, folder: str | Path) -> list[int]:
    """Index into ``datasets`` of each slice k of ``grid``, checking the series lies on ``grid``."""
    size = grid.GetSize()
    direction = np.asarray(grid.GetDirection()).reshape(3, 3)
    order: dict[int, int] = {}
    for n, ds in enumerate(datasets):
        rows, cols = int(ds.Rows), int(ds.Columns)
        cosines = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        row_cos, col_cos = cosines[:3], cosines[3:]
        if (cols, rows) != size[:2] or not (
            np.allclose(direction[:, 0], row_cos, atol=_DIRECTION_TOLERANCE)
            and np.allclose(direction[:, 1], col_cos, atol=_DIRECTION_TOLERANCE)
        ):
            raise DicomSegError(
                f"the label map (size {size}) is not on the grid of the DICOM series in {folder} "
                f"({cols}×{rows} pixels, orientation {cosines.round(4).tolist()})"
            )
        position = [float(v) for v in ds.ImagePositionPatient]
        index = np.asarray(grid.TransformPhysicalPointToContinuousIndex(position))
        k = round(float(index[2]))
        offset_mm = np.abs(index - [0, 0, k]) * np.asarray(grid.GetSpacing())
        if not 0 <= k < size[2] or np.max(offset_mm) > _POSITION_TOLERANCE_MM or k in order:
            raise DicomSegError(
                f"slice {ds.filename} of the DICOM series in {folder} (position "
                f"{[round(v, 3) for v in position]}) is not one slice of the label map's grid"
            )
        order[k] = n
    if len(order) != size[2]:
        raise DicomSegError(
            f"the label map has {size[2]} slices but the DICOM series in {folder} has {len(order)}"
        )
    return [order[k] for k in range(size[2])]


def series_grid(datasets: Sequence[Any]) -> sitk.Image:
    """An empty image on the grid of a series, from its headers alone (no pixel data decoded): origin at
    the first slice along the normal, spacing (column, row, median slice gap), direction cosines."""
    cosines = np.asarray([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(cosines[:3], cosines[3:])
    positions = sorted(
        (np.asarray([float(v) for v in ds.ImagePositionPatient]) for ds in datasets), key=lambda p: p @ normal
    )
    gap = float(np.median(np.diff([p @ normal for p in positions]))) if len(positions) > 1 else 1.0
    row_spacing, column_spacing = (float(v) for v in datasets[0].PixelSpacing)
    grid = sitk.Image([int(datasets[0].Columns), int(datasets[0].Rows), len(positions)], sitk.sitkUInt8)
    grid.SetOrigin(positions[0].tolist())
    grid.SetSpacing([column_spacing, row_spacing, gap])
    grid.SetDirection(np.column_stack([cosines[:3], cosines[3:], normal]).flatten().tolist())
    return grid


def _label_map_image(
    label_map: sitk.Image | str | Path | np.ndarray, datasets: Sequence[Any]
) -> sitk.Image:
    if isinstance(label_map, sitk.Image):
        return label_map
    if isinstance(label_map, np.ndarray):
        # A bare array is taken to be on the series grid (z, y, x): the series gives its geometry.
        grid = series_grid(datasets)
        expected = tuple(reversed(grid.GetSize()))
        if label_map.shape != expected:
            raise DicomSegError(
                f"label array of shape {label_map.shape} does not fit the DICOM series (z, y, x = {expected})"
            )
        image = sitk.GetImageFromArray(np.ascontiguousarray(label_map))
        image.CopyInformation(grid)
        return image
    from mambamim.data.imageio import read_image

    return read_image(label_map, allow_constant=True)


def write_dicom_seg(
    label_map: sitk.Image | str | Path | np.ndarray,
    source_dicom_dir: str | Path,
    labels: Sequence[dict[str, Any]],
    out_path: str | Path,
    *,
    overwrite: bool = False,
    algorithm_name: str = "MambaMIM Segmenter",
    algorithm_version: str = "",
    series_description: str = "MambaMIM segmentation",
) -> DicomSegResult:
    """Write ``label_map`` as a DICOM SEG referencing the series in ``source_dicom_dir``.

    ``label_map``: a ``SimpleITK.Image`` on the series' grid (what ``segment`` returns for a DICOM
    folder), a label map file, or an integer array (z, y, x) on the series' grid. ``labels``: card records
    ``{value, name, color, snomed?}``; values in the map that the table lacks are refused. Organs absent
    from the map get no segment; a map with no organ at all is refused (a SEG needs a segment).
    Atomic; an existing ``out_path`` is refused unless ``overwrite``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import mambamim

    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"output {out_path} already exists; pass --overwrite to replace it")
    notes: list[str] = []
    datasets = read_source_headers(source_dicom_dir, notes)
    image = _label_map_image(label_map, datasets)
    order = slice_order(datasets, image, source_dicom_dir)
    sources = [datasets[n] for n in order]
    array = sitk.GetArrayFromImage(image)  # (k, rows, columns): slice k <-> sources[k]
    by_value = {int(label["value"]): label for label in labels}
    present = [int(v) for v in np.unique(array) if v != 0]
    unexpected = [v for v in present if v not in by_value]
    if unexpected:
        raise DicomSegError(f"the label map holds values {unexpected} that the label table does not define")
    if not present:
        raise DicomSegError("the label map is empty (no organ found): a DICOM SEG needs at least one segment")
    segment_values = [int(label["value"]) for label in labels if int(label["value"]) in present]
    numbers = np.zeros(max(segment_values) + 1, dtype=np.uint16)
    for number, value in enumerate(segment_values, start=1):
        numbers[value] = number
    pixels = numbers[array].astype(np.uint8 if len(segment_values) < 256 else np.uint16)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version or mambamim.__version__,
    )
    descriptions = []
    for number, value in enumerate(segment_values, start=1):
        label = by_value[value]
        terminology = label_terminology(label)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=str(label["name"])[:64],
                segmented_property_category=hd.sr.CodedConcept(
                    terminology.category.code, terminology.category.scheme, terminology.category.meaning
                ),
                segmented_property_type=hd.sr.CodedConcept(
                    terminology.type.code, terminology.type.scheme, terminology.type.meaning
                ),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=hd.UID(),
                tracking_id=str(label["name"])[:64],
                display_color=hd.color.CIELabColor.from_rgb(*[int(c) for c in label["color"]]),
            )
        )
    with warnings.catch_warnings():  # the copied patient name is the source's, whatever its form
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = _segmentation(
            hd, sources, pixels, descriptions, algorithm_name, algorithm_version, series_description
        )
    with safe_write(out_path) as tmp:
        seg.save_as(tmp)
    for note in notes:
        logger.warning(note)
    return DicomSegResult(
        path=out_path,
        segments=[
            {"number": n, "value": v, "name": by_value[v]["name"]}
            for n, v in enumerate(segment_values, start=1)
        ],
        frames=int(seg.NumberOfFrames),
        source_instances=[str(ds.SOPInstanceUID) for ds in sources],
        notes=notes,
    )


def _segmentation(
    hd, sources, pixels, descriptions, algorithm_name: str, algorithm_version: str, series_description: str
):
    import mambamim

    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="MambaMIM Segmenter",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=f"mambamim {mambamim.__version__}",
        device_serial_number="none",
        series_description=series_description[:64],
        content_label="SEGMENTATION",
        content_description=f"{algorithm_name} {algorithm_version}".strip()[:64],
        omit_empty_frames=True,
    )
