"""`mambamim finetune`: supervised fine-tuning of any zoo network, ending with a model package."""

from __future__ import annotations

import argparse

from mambamim.commands.aliases import add_alias, add_training_aliases
from mambamim.commands.cli_args import (
    add_common_arguments,
    common_overrides,
    exit_code,
    json_object,
)

HELP = "Fine-tune a segmentation network (optionally from a MambaMIM encoder) and write a model package."
PRESETS = ("paper", "tiny")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", nargs="?", default=None,
        help="MSD-style dataset.json, an nnU-Net v2 raw dataset (folder, or ID/name under $nnUNet_raw), or "
        "an image folder paired with --labels-dir (not needed with --resume)",
    )  # fmt: skip
    parser.add_argument("--labels-dir", help="folder of label maps named like the images")
    parser.add_argument("--label-names", help='JSON label table {"1": "spleen", ...} (default: dataset.json)')
    add_common_arguments(parser, PRESETS)
    model = parser.add_argument_group("model")
    model.add_argument("--model", dest="model_name", help="zoo network name (default: hymamba)")
    model.add_argument("--model-config", type=json_object, metavar="JSON",
                       help='constructor overrides, e.g. \'{"channels": [16, 32, 64, 96]}\'')  # fmt: skip
    model.add_argument(
        "--pretrained", help="MambaMIM checkpoint / encoder.safetensors / any partial state dict"
    )
    model.add_argument(
        "--allow-partial-encoder", action="store_const", const=True,
        help="train on when --pretrained fits only in part (missing or other-shaped encoder tensors)",
    )  # fmt: skip
    model.add_argument("--freeze-encoder-epochs", type=int, help="epochs with the encoder frozen (lr 0)")
    val = parser.add_argument_group("validation and split")
    val.add_argument("--split", choices=("auto", "kfold"),
                     help="auto: the dataset's validation list if any, else K-fold")  # fmt: skip
    val.add_argument("--folds", type=int, help="K of the K-fold split (default 5)")
    val.add_argument("--fold", type=int, help="which fold validates (default 0)")
    val.add_argument("--val-every", type=int, help="validate every N epochs (and after the last)")
    val.add_argument("--overlap", type=float, help="sliding-window overlap (default 0.5)")
    val.add_argument(
        "--sw-batch-size", dest="sw_batch", type=int, help="windows per forward pass in validation"
    )
    add_alias(parser, "--sw-batch", "--sw-batch-size", "sw_batch", int)
    add_training_aliases(parser)
    pkg = parser.add_argument_group("model package")
    pkg.add_argument("--package", help="package folder (default: OUTPUT_DIR/package)")
    pkg.add_argument("--package-name", help="name in the model card")
    pkg.add_argument("--modality", choices=("CT", "MR"), help="input modality in the model card (default CT)")
    pkg.add_argument("--training-data", help="training-data description for the model card")
    pkg.add_argument("--license", help="licence of the weights for the model card")


def config_from_args(args: argparse.Namespace):
    """The fine-tuning config the options ask for (also used by ``mambamim crossval``)."""
    from mambamim.engine.finetune import make_config

    names = (
        "labels_dir", "label_names", "model_name", "pretrained", "allow_partial_encoder",
        "freeze_encoder_epochs", "split", "folds", "fold", "val_every", "overlap", "sw_batch", "package_name",
        "modality", "training_data", "license",
    )  # fmt: skip
    explicit = {name: getattr(args, name, None) for name in names}
    overrides = common_overrides(args)
    return make_config(args.preset, data=args.data, model=args.model_config, **explicit, **overrides)


def run(args: argparse.Namespace) -> int:
    from mambamim.engine.finetune import run_finetune

    config = config_from_args(args)
    result = run_finetune(
        config, args.output_dir, resume=args.resume, device=args.device, workers=args.workers,
        overwrite=args.overwrite, show_bar=not args.no_progress, package_dir=args.package,
        epochs=args.epochs,
    )  # fmt: skip
    if result.best_dice is not None:
        print(f"best validation mean Dice {result.best_dice:.4f}; package: {result.package}")
    return exit_code(result.status)
