"""`mambamim segment`: label a volume (or a folder of volumes) with a model package."""

from __future__ import annotations

import argparse
from pathlib import Path

from mambamim.commands.aliases import add_alias
from mambamim.errors import InvalidInput

HELP = "segment a NIfTI/NRRD/MGH file, a DICOM folder or a folder of volumes with a model package"

# The built-in demonstration package, used when --model is not given.
DEMO_PACKAGE = Path(__file__).resolve().parents[3] / "Resources" / "models" / "btcv-hymamba-demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        default=None,
        help=f"model package folder or .zip (default: the built-in demo, {DEMO_PACKAGE.name}); repeat it to "
        "ensemble several packages (e.g. the five folds), whose probabilities are averaged; a .npz from "
        "--save-probabilities joins the average as one member",
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
    parser.add_argument(
        "--device", choices=("auto", "cuda", "cpu"), default="auto",
        help="auto: CUDA when available, else the CPU",
    )
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
        "--sw-batch-size", type=int, default=None,
        help="windows per forward pass (default: 2 on a CPU, 4 on a GPU, from measurements)",
    )  # fmt: skip
    add_alias(parser, "--sw-batch", "--sw-batch-size", "sw_batch_size", int)
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads (default: the cores other programs leave free, unless OMP_NUM_THREADS is set; "
        "more threads than free cores slow a shared machine down several times)",
    )  # fmt: skip
    parser.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=None,
        help="mirroring test-time augmentation as nnU-Net: 8 mirrored passes per window, so 8x the inference "
        "time (on a CPU minutes instead of seconds) for a small gain; default: on with CUDA, off on CPU",
    )  # fmt: skip
    parser.add_argument(
        "--save-probabilities", nargs="?", const=True, default=None, metavar="NPZ",
        help="also write the per-class probabilities on the input grid with the label table (.npz, default "
        "name <output>.probabilities.npz), to ensemble later with --model FILE.npz",
    )  # fmt: skip
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
    parser.add_argument(
        "--progress", choices=("json", "bar", "none"), default="bar",
        help="json: one JSON line per update (for GUIs); bar: a progress bar; none: quiet",
    )
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
    from mambamim.infer.outputs.cli import add_output_arguments

    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    from mambamim.infer.progress import run_command

    summary: list[str] = []
    code = run_command(args.progress, lambda reporter, cancel: _segment(args, reporter, cancel, summary))
    # Printed after the progress stream has ended; stdout carries only JSON lines in json mode.
    if summary:
        print("\n".join(summary), file=sys.stderr if args.progress == "json" else sys.stdout)
    return code


def _cpu_threads(args: argparse.Namespace) -> None:
    """Thread count for a CPU run (see mambamim.infer.defaults); a GPU run is left alone."""
    from mambamim.infer.defaults import apply_cpu_threads
    from mambamim.infer.segment import resolve_device

    if resolve_device(args.device).type == "cpu":
        apply_cpu_threads(args.threads)


def _segment(args: argparse.Namespace, reporter, cancel, summary: list[str]) -> dict[str, str]:
    from mambamim.data.imageio import is_dicom_folder
    from mambamim.infer.batch import segment_folder
    from mambamim.infer.evaluate import format_dice_table

    model = args.model or [DEMO_PACKAGE]
    _cpu_threads(args)
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
        tta=args.tta,
        modality=args.modality,
        allow_label_map=args.allow_label_map,
        allow_other_modality=args.allow_other_modality,
        allow_small=args.allow_small,
        window_policy=args.windows,
    )
    if args.input.is_dir() and not is_dicom_folder(args.input):
        if args.reference is not None:
            raise InvalidInput("--reference works with one input volume; use `mambamim evaluate` for folders")
        if args.save_probabilities not in (None, True):
            raise InvalidInput(
                "in batch mode --save-probabilities takes no file name (one .npz beside each label map)"
            )
        from mambamim.infer.outputs.cli import batch_companion_options

        rows, csv_path = segment_folder(
            args.input,
            args.output,
            model,
            fmt=args.format,
            overwrite=args.overwrite,
            save_probabilities=True if args.save_probabilities else None,
            progress=reporter,
            cancel=cancel,
            companion_options=batch_companion_options(args),
            **options,
        )
        failed = [r for r in rows if r["status"] != "ok"]
        summary.append(f"segmented {len(rows) - len(failed)}/{len(rows)} volumes; timings in {csv_path}")
        summary.extend(f"  skipped {row['case']}: {row['message']}" for row in failed)
        return {"folder": str(args.output), "timings": str(csv_path)}

    from mambamim.infer.outputs.cli import companions_from_args
    from mambamim.infer.segment import segment_file

    result = segment_file(
        args.input,
        args.output,
        model,
        overwrite=args.overwrite,
        reference=args.reference,
        save_probabilities=args.save_probabilities,
        progress=reporter,
        cancel=cancel,
        companions=companions_from_args(args),
        **options,
    )
    summary.extend(f"note: {note}" for note in result.notes)
    if result.metrics:
        summary.append(format_dice_table(result.metrics))
    summary.append(
        f"wrote {result.output} in {result.seconds:.1f} s on {result.device} "
        f"(model grid {list(result.model_shape)}; inference {result.timings['inference']:.1f} s)"
    )
    summary.extend(f"wrote {path}" for path in result.companions.values())
    outputs = {"labels": str(result.output), **{name: str(path) for name, path in result.companions.items()}}
    if result.probability_file is not None:
        summary.append(f"wrote probabilities {result.probability_file}")
        outputs["probabilities"] = str(result.probability_file)
    return outputs
