"""Batch segmentation: every volume in a folder -> a label map in another folder + a CSV of timings.

Cases are the image files directly in the input folder and its sub-folders that hold a DICOM series.
A case that fails (unreadable, 2-D, ...) is reported in the CSV and skipped; the others go on.
Outputs are ``<case>_seg.<format>``; existing outputs are refused unless ``overwrite``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mambamim.data.imageio import READ_SUFFIXES, image_suffix, is_dicom_folder, write_csv
from mambamim.errors import InvalidInput
from mambamim.infer.ensemble import Models, load_members
from mambamim.infer.outputs.companions import plan_companions
from mambamim.infer.progress import Cancelled, CancelToken, ProgressCallback, ProgressEvent
from mambamim.infer.segment import segment_file

logger = logging.getLogger(__name__)

TIMINGS_FILE = "timings.csv"
TIMING_FIELDS = ("case", "input", "output", "status", "seconds", "device", "message")


@dataclass
class BatchCase:
    name: str
    input: Path
    output: Path


def find_cases(
    input_dir: str | Path, output_dir: str | Path, fmt: str = "nii.gz"
) -> list[BatchCase]:
    """The cases of ``input_dir`` with their output paths in ``output_dir``."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise InvalidInput(f"input folder {input_dir} does not exist or is not a folder")
    if output_dir.resolve() == input_dir.resolve():
        raise InvalidInput(f"output folder {output_dir} must differ from the input folder")
    cases = []
    for entry in sorted(input_dir.iterdir()):
        suffix = image_suffix(entry)
        if entry.is_file() and suffix in READ_SUFFIXES:
            name = entry.name[: -len(suffix)]
        elif entry.is_dir() and is_dicom_folder(entry):
            name = entry.name
        else:
            continue
        cases.append(BatchCase(name, entry, output_dir / f"{name}_seg.{fmt}"))
    if not cases:
        raise InvalidInput(
            f"input folder {input_dir} holds no readable volumes "
            f"({', '.join(READ_SUFFIXES)} or DICOM folders)"
        )
    return cases


def segment_folder(
    input_dir: str | Path,
    output_dir: str | Path,
    model: Models,
    *,
    fmt: str = "nii.gz",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    companion_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[list[dict[str, Any]], Path]:
    """Segment every case; returns the timing rows and the CSV path (``output_dir/timings.csv``).

    ``companion_options``: keywords of :func:`mambamim.infer.outputs.companions.plan_companions`, the
    files written beside each case's label map (``.seg.nrrd``, DICOM SEG, statistics, preview).

    Cancellation stops the batch: finished cases stay (they are complete files), the running one
    writes nothing and no CSV is written.
    """
    output_dir = Path(output_dir)
    cases = find_cases(input_dir, output_dir, fmt)
    csv_path = output_dir / TIMINGS_FILE
    if csv_path.exists() and not overwrite:
        raise FileExistsError(f"output {csv_path} already exists; pass --overwrite to replace it")
    package, saved = load_members(model)  # one package, or an ensemble of packages
    if saved:
        raise InvalidInput(
            f"probability files ({saved[0].path}) belong to one case; batch mode takes packages"
        )
    progress = progress or (lambda event: None)
    rows = []
    for index, case in enumerate(cases):

        def scaled(event: ProgressEvent, index: int = index, case: BatchCase = case) -> None:
            fraction = (index + event.fraction) / len(cases)
            progress(
                ProgressEvent(
                    event.stage, fraction, None, f"[{index + 1}/{len(cases)} {case.name}] {event.message}"
                )
            )

        t = time.perf_counter()
        row = {"case": case.name, "input": str(case.input), "output": str(case.output), "device": ""}
        try:
            companions = None
            if companion_options is not None:
                companions = plan_companions(case.output, case.input, **companion_options)
            result = segment_file(
                case.input,
                case.output,
                package,
                overwrite=overwrite,
                progress=scaled,
                cancel=cancel,
                companions=companions,
                **options,
            )
            row.update(status="ok", device=result.device, message="; ".join(result.notes))
        except Cancelled:
            raise
        except Exception as err:  # one bad case must not stop the batch; the CSV records why
            logger.error("case %s failed: %s", case.name, err)
            row.update(status="error", output="", message=str(err))
        row["seconds"] = round(time.perf_counter() - t, 3)
        rows.append(row)
    write_csv(csv_path, TIMING_FIELDS, rows, overwrite=overwrite)
    return rows, csv_path
