"""`mambamim package`: build a model package (weights + model card) from a fine-tuning checkpoint, or
from an nnU-Net v2 model folder trained with one of our trainers (``--from-nnunet``, extra ``[nnunet]``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mambamim.commands.aliases import ThreeValues, legacy_intensity, roi_size
from mambamim.commands.cli_args import spacing
from mambamim.errors import InvalidInput, Unavailable

HELP = "build a model package (weights.safetensors + model.json) from a fine-tuning checkpoint or nnU-Net"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="fine-tuning checkpoint (mambamim-finetune)")
    source.add_argument(
        "--from-nnunet",
        type=Path,
        metavar="RESULTS_FOLDER",
        help="nnU-Net v2 model folder (nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG) of a MambaMIM "
        "trainer; one fold becomes the package (--fold). Card fields come from its plans and dataset.json",
    )
    parser.add_argument("--fold", default=None, help="with --from-nnunet: the fold (default: the first)")
    parser.add_argument("--out", type=Path, required=True, help="package folder to create")
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help='label JSON: {"1": "spleen"} or [{"value", "name", "color", "snomed"}] (default: checkpoint)',
    )
    parser.add_argument("--name", default=None, help="package name (default: the output folder's name)")
    parser.add_argument("--version", default="1.0.0", help="package version")
    parser.add_argument("--modality", choices=("CT", "MR"), default=None, help="default: checkpoint, else CT")
    parser.add_argument(
        "--spacing", action=ThreeValues, convert=spacing, default=None, metavar="MM",
        help="target spacing in mm: 1.5 or 1.5,1.5,2 (default: checkpoint, else 1.5)",
    )  # fmt: skip
    parser.add_argument(
        "--intensity", type=legacy_intensity, default=None,
        help="ct, zscore, window:LOWER:UPPER or clip_zscore:LOWER:UPPER:MEAN:STD "
        "(default: checkpoint, else ct for CT and zscore for MR)",
    )  # fmt: skip
    parser.add_argument(
        "--roi-size", action=ThreeValues, convert=roi_size, default=None, metavar="VOXELS",
        help="sliding-window ROI: 96 or 96,96,64 (default: checkpoint crop size, else 96)",
    )  # fmt: skip
    parser.add_argument(
        "--overlap",
        type=float,
        default=None,
        help="default sliding-window overlap (default: checkpoint, else 0.5)",
    )
    parser.add_argument("--license", default=None, help="licence of the weights (default: checkpoint)")
    parser.add_argument("--training-data", default=None, help="description of the training data")
    parser.add_argument("--description", default="", help="one-paragraph description of the model")
    parser.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help="JSON file of validation metrics (default: the checkpoint's, if any)",
    )
    parser.add_argument("--zip", action="store_true", help="also write <out>.zip")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package")


def run(args: argparse.Namespace) -> int:
    path = _from_nnunet(args) if args.from_nnunet is not None else _build(args)
    print(f"wrote model package {path}")
    return 0


def _from_nnunet(args: argparse.Namespace) -> Path:
    from mambamim.infer.package import write_zip

    try:  # nnU-Net v2 is imported where the conversion needs it
        from mambamim.nnunet.package import package_from_nnunet

        path = package_from_nnunet(
            args.from_nnunet, args.out, fold=args.fold, name=args.name, version=args.version,
            license=args.license or "unspecified", overwrite=args.overwrite,
        )  # fmt: skip
    except ImportError as err:
        raise Unavailable(f"--from-nnunet needs nnU-Net v2 (extra [nnunet]): {err}") from None
    if args.zip:
        write_zip(path, path.with_name(path.name + ".zip"), overwrite=args.overwrite)
    return path


def _build(args: argparse.Namespace) -> Path:
    import json

    from mambamim.infer.package import package_checkpoint, write_zip

    def json_arg(value, what: str):
        """JSON from a file path, or the argument itself as inline JSON."""
        text = str(value)
        try:
            if Path(text).is_file():
                text = Path(text).read_text()
        except OSError:  # an inline JSON string too long to be a file name
            pass
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidInput(f"{what} {value}: not valid JSON ({err})") from None

    # Flags given here take precedence over the run's settings stored in the checkpoint.
    path = package_checkpoint(
        args.checkpoint,
        args.out,
        labels=json_arg(args.labels, "--labels") if args.labels is not None else None,
        name=args.name or args.out.name,
        version=args.version,
        modality=args.modality,
        spacing=args.spacing,
        intensity=args.intensity,
        roi_size=args.roi_size,
        overlap=args.overlap,
        license=args.license,
        training_data=args.training_data,
        metrics=json_arg(args.metrics, "--metrics") if args.metrics is not None else None,
        description=args.description,
        overwrite=args.overwrite,
    )
    if args.zip:
        write_zip(path, path.with_name(path.name + ".zip"), overwrite=args.overwrite)
    return path
