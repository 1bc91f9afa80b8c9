"""``segment``'s options for the files beside the label map (see :mod:`.companions`)."""

from __future__ import annotations

import argparse

from mambamim.errors import InvalidInput
from mambamim.infer.outputs.companions import AUTO, Companions, plan_companions


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "results beside the label map (names from the --output stem; in batch mode beside every case's)"
    )
    group.add_argument(
        "--seg-nrrd", metavar="PATH", nargs="?", const=AUTO, default=AUTO,
        help="Slicer segmentation with the card's organ names, colours and terminology "
        "(default: written, as <stem>.seg.nrrd; read it with slicerio or drop it into Slicer)",
    )  # fmt: skip
    group.add_argument("--no-seg-nrrd", action="store_true", help="do not write the .seg.nrrd")
    group.add_argument(
        "--dicom-seg", metavar="PATH", nargs="?", const=AUTO, default=AUTO,
        help="DICOM SEG referencing the source series, for a DICOM folder input (default: written for "
        "DICOM input as <stem>_seg.dcm, so the result can go back to a PACS with its images; when it "
        "cannot be written, e.g. no organ found, a note says why; given explicitly, that is an error)",
    )  # fmt: skip
    group.add_argument("--no-dicom-seg", action="store_true", help="do not write a DICOM SEG")
    group.add_argument(
        "--statistics", metavar="PATH", nargs="?", const=AUTO, default=None,
        help="per-organ volume (mL), voxel count and intensity mean/std as CSV and JSON "
        "(default name <stem>_statistics.csv/.json), as TotalSegmentator's --statistics",
    )  # fmt: skip
    group.add_argument(
        "--preview", metavar="PATH", nargs="?", const=AUTO, default=None,
        help="PNG of the segmentation over the scan in three planes with a legend "
        "(default name <stem>_preview.png)",
    )  # fmt: skip


def companion_options(args: argparse.Namespace) -> dict[str, str | None]:
    """The ``plan_companions`` keywords the options ask for."""
    return {
        "seg_nrrd": None if args.no_seg_nrrd else args.seg_nrrd,
        "dicom_seg": None if args.no_dicom_seg else args.dicom_seg,
        "statistics": args.statistics,
        "preview": args.preview,
    }


def companions_from_args(args: argparse.Namespace) -> Companions:
    return plan_companions(args.output, args.input, **companion_options(args))


def batch_companion_options(args: argparse.Namespace) -> dict[str, str | None]:
    """Batch mode: the same files beside every case's label map, under their default names; a file
    name given for one of them is refused (it would be the same for every case)."""
    options = companion_options(args)
    named = [f"--{key.replace('_', '-')}" for key, value in options.items() if value not in (None, AUTO)]
    if named:
        raise InvalidInput(
            f"{', '.join(named)} with a file name works with one input volume; in batch mode give the "
            "option without a name (each case gets <case>_seg.seg.nrrd, ... beside its label map)"
        )
    return options
