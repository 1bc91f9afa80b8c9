"""The files ``segment`` writes beside the label map, planned and checked before the run.

- ``seg_nrrd``: Slicer ``.seg.nrrd`` with the card's names, colours and terminology (default: on,
  ``<output stem>.seg.nrrd``);
- ``dicom_seg``: DICOM SEG referencing the source series, for a DICOM folder input (default: on for DICOM
  input, ``<output stem>_seg.dcm``; when it was not asked for explicitly and cannot be written, e.g. no
  organ found, a note says why instead of failing the run);
- ``statistics``: per-organ volume (mL), voxel count, intensity mean / std as CSV and JSON (off by
  default, ``<output stem>_statistics.csv|json``);
- ``preview``: PNG of the segmentation over the scan in three planes (off by default,
  ``<output stem>_preview.png``).

All or nothing: existing files are refused before any work unless ``overwrite``; when one of them
fails, what this run wrote (the label map included) is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from mambamim.errors import InvalidInput
from mambamim.infer.card import ModelCard

AUTO = "auto"


@dataclass
class Companions:
    """Paths to write (``None`` = not written); ``dicom_seg_required``: fail rather than note."""

    seg_nrrd: Path | None = None
    dicom_seg: Path | None = None
    statistics: Path | None = None
    preview: Path | None = None
    dicom_seg_required: bool = False

    def files(self) -> list[Path]:
        from mambamim.infer.outputs.statistics import statistics_paths

        files = [p for p in (self.seg_nrrd, self.dicom_seg, self.preview) if p is not None]
        if self.statistics is not None:
            files.extend(statistics_paths(self.statistics))
        return files

    def check(self, label_output: str | Path, overwrite: bool) -> None:
        """Refuse clashes, existing files (unless ``overwrite``) and folders that cannot be written."""
        from mambamim.data.imageio import check_writable

        files = self.files()
        names = [p.resolve() for p in [Path(label_output), *files]]
        if len(set(names)) != len(names):
            raise InvalidInput(f"two outputs share one file name: {', '.join(str(p) for p in files)}")
        for path in files:
            if path.exists() and not overwrite:
                raise FileExistsError(f"output {path} already exists; pass --overwrite to replace it")
            check_writable(path)


def output_stem(output: str | Path) -> Path:
    """The label map path without its image suffix (``out/ct_labels.nii.gz`` -> ``out/ct_labels``)."""
    from mambamim.data.imageio import image_suffix

    output = Path(output)
    suffix = image_suffix(output)
    return output.with_name(output.name[: len(output.name) - len(suffix)] if suffix else output.name)


def plan_companions(
    output: str | Path,
    input_path: str | Path,
    *,
    seg_nrrd: str | None = AUTO,
    dicom_seg: str | None = AUTO,
    statistics: str | None = None,
    preview: str | None = None,
) -> Companions:
    """Resolve each option (``None`` off, ``"auto"`` default name, else a path) for one label map."""
    from mambamim.data.imageio import is_dicom_folder

    stem = output_stem(output)

    def resolve(value: str | None, default: str) -> Path | None:
        if value is None:
            return None
        return stem.with_name(stem.name + default) if value == AUTO else Path(value)

    for flag, value, suffixes in (
        ("--seg-nrrd", seg_nrrd, (".nrrd",)),
        ("--dicom-seg", dicom_seg, (".dcm",)),
        ("--statistics", statistics, (".csv", ".json")),
        ("--preview", preview, (".png",)),
    ):
        if value not in (None, AUTO) and not str(value).lower().endswith(suffixes):
            raise InvalidInput(f"{flag} {value}: the file name must end in {' or '.join(suffixes)}")
    dicom_input = is_dicom_folder(input_path)
    if dicom_seg not in (None, AUTO) and not dicom_input:
        raise InvalidInput(f"--dicom-seg needs a DICOM series folder as input; {input_path} is not one")
    return Companions(
        seg_nrrd=resolve(seg_nrrd, ".seg.nrrd"),
        dicom_seg=resolve(dicom_seg, "_seg.dcm") if dicom_input else None,
        statistics=resolve(statistics, "_statistics.csv"),
        preview=resolve(preview, "_preview.png"),
        dicom_seg_required=dicom_seg not in (None, AUTO),
    )


def preview_window(card: ModelCard) -> tuple[float, float] | None:
    """The card's CT intensity window, shown as the preview's grey range; ``None`` (percentiles) else."""
    intensity = card.input.intensity
    return (float(intensity["lower"]), float(intensity["upper"])) if intensity["type"] == "window" else None


def write_companions(
    companions: Companions,
    label_map: sitk.Image,
    image: sitk.Image,
    card: ModelCard,
    input_path: str | Path,
    *,
    overwrite: bool = False,
    notes: list[str] | None = None,
) -> dict[str, Path]:
    """Write the planned files; returns ``{name: path}``. On failure removes what it wrote, then raises."""
    from mambamim.infer.outputs.terminology import generic_terminology_note

    labels = card.labels_as_dicts()
    notes = notes if notes is not None else []
    written: dict[str, Path] = {}
    try:
        if companions.seg_nrrd is not None:
            from mambamim.infer.outputs.seg_nrrd import write_seg_nrrd

            written["seg_nrrd"] = write_seg_nrrd(label_map, labels, companions.seg_nrrd, overwrite)
        if companions.dicom_seg is not None:
            from mambamim.infer.outputs.dicom_seg import DicomSegError, write_dicom_seg

            try:
                result = write_dicom_seg(
                    label_map,
                    input_path,
                    labels,
                    companions.dicom_seg,
                    overwrite=overwrite,
                    algorithm_name=str(card.name),
                    algorithm_version=str(card.version or ""),
                )
            except DicomSegError as err:
                if companions.dicom_seg_required:
                    raise
                notes.append(f"no DICOM SEG written: {err}")
            else:
                written["dicom_seg"] = result.path
                notes.extend(result.notes)
        if companions.statistics is not None:
            from mambamim.infer.outputs.statistics import label_statistics, write_statistics

            rows = label_statistics(label_map, image, labels)
            written["statistics_csv"], written["statistics_json"] = write_statistics(
                rows, companions.statistics, overwrite
            )
        if companions.preview is not None:
            from mambamim.infer.outputs.preview import save_preview

            written["preview"] = save_preview(
                companions.preview,
                image,
                label_map,
                labels,
                window=preview_window(card),
                title=f"{Path(input_path).name}: {card.name} {card.version or ''}".strip(),
            )
    except BaseException:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    if "seg_nrrd" in written or "dicom_seg" in written:
        note = generic_terminology_note(labels)
        if note:
            notes.append(note)
    return written
