"""`mambamim segment`: label a volume (or a folder of volumes) with a model package."""

from __future__ import annotations

import argparse
from pathlib import Path

from mambamim.errors import InvalidInput

HELP = "segment a NIfTI/NRRD/MGH file, a DICOM folder or a folder of volumes with a model package"

# The built-in demonstration package, used when --model is not given.
DEMO_PACKAGE = Path(__file__).resolve().parents[3] / "Resources" / "models" / "btcv-hymamba-demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"model package folder or .zip (default: the built-in demo, {DEMO_PACKAGE.name})",
    )
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="image file (.nii.gz, .nrrd, .mgz...), DICOM series folder, or a folder of volumes (batch mode)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="label map file (.nii.gz, .nii, .nrrd); in batch mode an output folder",
    )
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="coarser grid (1.5x card spacing), overlap 0.25: several times faster on a CPU, less accurate",
    )
    parser.add_argument(
        "--overlap", type=float, default=None, help="window overlap in [0, 1) (default: card)"
    )
    parser.add_argument(
        "--windows",
        choices=("auto", "card", "large"),
        default="auto",
        help="window policy: card = the model card's window and overlap; large = larger windows at overlap "
        "0.25, chosen from the memory estimate (fewer voxel-evaluations, faster on a CPU); auto = card",
    )
    parser.add_argument(
        "--sw-batch-size", type=int, default=None, help="windows per forward pass (CPU 1, GPU 4)"
    )
    parser.add_argument(
        "--keep-largest", action="store_true", help="keep the largest component of each organ"
    )
    parser.add_argument(
        "--modality",
        choices=("CT", "MR"),
        default=None,
        help="declare the input's modality instead of guessing it (DICOM Modality tag, else intensities); "
        "a model for another modality is refused",
    )
    checks = parser.add_argument_group(
        "input checks (each refuses by default, saying what it saw)"
    )
    checks.add_argument(
        "--allow-label-map", action="store_true",
        help="segment an input that looks like a label map (few integer values in constant regions)",
    )  # fmt: skip
    checks.add_argument(
        "--allow-other-modality", action="store_true",
        help="run the model even when the input's modality differs from the model card's",
    )  # fmt: skip
    checks.add_argument(
        "--allow-small", action="store_true",
        help="segment a volume spanning less than 30 mm along some axis",
    )  # fmt: skip
    parser.add_argument("--progress", choices=("json", "bar", "none"), default="bar")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="reference label map on the input grid: print per-organ Dice and the time taken",
    )
    parser.add_argument(
        "--format", choices=("nii.gz", "nrrd"), default="nii.gz", help="batch-mode output format"
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from mambamim.infer.progress import run_command

    summary: list[str] = []
    code = run_command(args.progress, lambda reporter, cancel: _segment(args, reporter, cancel, summary))
    # Printed after the progress stream has ended; stdout carries only JSON lines in json mode.
    if summary:
        print("\n".join(summary), file=sys.stderr if args.progress == "json" else sys.stdout)
    return code


def _segment(args: argparse.Namespace, reporter, cancel, summary: list[str]) -> dict[str, str]:
    from mambamim.data.imageio import is_dicom_folder
    from mambamim.infer.batch import segment_folder
    from mambamim.infer.evaluate import format_dice_table

    model = args.model or DEMO_PACKAGE
    if args.model is None and not DEMO_PACKAGE.exists():
        raise FileNotFoundError(
            f"--model was not given and the built-in demo package {DEMO_PACKAGE} is missing"
        )
    options = dict(
        device=args.device,
        fast=args.fast,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        keep_largest=args.keep_largest,
        modality=args.modality,
        allow_label_map=args.allow_label_map,
        allow_other_modality=args.allow_other_modality,
        allow_small=args.allow_small,
        window_policy=args.windows,
    )
    if args.input.is_dir() and not is_dicom_folder(args.input):
        if args.reference is not None:
            raise InvalidInput("--reference works with one input volume; use `mambamim evaluate` for folders")
        rows, csv_path = segment_folder(
            args.input,
            args.output,
            model,
            fmt=args.format,
            overwrite=args.overwrite,
            progress=reporter,
            cancel=cancel,
            **options,
        )
        failed = [r for r in rows if r["status"] != "ok"]
        summary.append(f"segmented {len(rows) - len(failed)}/{len(rows)} volumes; timings in {csv_path}")
        summary.extend(f"  skipped {row['case']}: {row['message']}" for row in failed)
        return {"folder": str(args.output), "timings": str(csv_path)}

    from mambamim.infer.segment import segment_file

    result = segment_file(
        args.input,
        args.output,
        model,
        overwrite=args.overwrite,
        reference=args.reference,
        progress=reporter,
        cancel=cancel,
        **options,
    )
    summary.extend(f"note: {note}" for note in result.notes)
    if result.metrics:
        summary.append(format_dice_table(result.metrics))
    summary.append(
        f"wrote {result.output} in {result.seconds:.1f} s on {result.device} "
        f"(model grid {list(result.model_shape)}; inference {result.timings['inference']:.1f} s)"
    )
    return {"labels": str(result.output)}
