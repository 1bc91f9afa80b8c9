"""`mambamim pretrain`: MambaMIM self-supervised pre-training on a folder of unlabelled scans."""

from __future__ import annotations

import argparse

from mambamim.commands.aliases import add_training_aliases
from mambamim.commands.cli_args import (
    add_common_arguments,
    common_overrides,
    exit_code,
    json_object,
)

HELP = "Pre-train a HyMamba encoder with MambaMIM on unlabelled scans (CPU, one GPU, or torchrun)."
PRESETS = ("paper", "tiny")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", nargs="?", default=None,
        help="folder of NIfTI/NRRD/MGH scans and DICOM series folders, one scan, an MSD dataset.json or an "
        "nnU-Net v2 raw dataset (imagesTr and imagesTs; not needed with --resume)",
    )  # fmt: skip
    add_common_arguments(parser, PRESETS)
    add_training_aliases(parser)
    mim = parser.add_argument_group("MambaMIM (default: model constructor / preset)")
    mim.add_argument("--mask-ratio", type=float, help="fraction of Mamba-grid tokens masked (paper: 0.75)")
    mim.add_argument(
        "--mask-token", choices=("toki", "learnable"), help="TOKI (default) or a learnable token"
    )
    mim.add_argument(
        "--no-skip", dest="skip", action="store_const", const=False, help="ablation: no decoder skips"
    )
    mim.add_argument("--no-bottom-up", dest="bottom_up", action="store_const", const=False,
                     help="ablation: only the Mamba stage is masked")  # fmt: skip
    mim.add_argument("--no-norm-pix-loss", dest="norm_pix_loss", action="store_const", const=False,
                     help="plain MSE targets instead of per-16³-patch normalised ones")  # fmt: skip
    mim.add_argument("--encoder-config", type=json_object, metavar="JSON",
                     help='HyMamba encoder size, e.g. \'{"channels": [16, 32, 64, 96, 192]}\'')  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from mambamim.engine.pretrain import make_config, run_pretrain

    model = {
        key: getattr(args, key)
        for key in ("mask_ratio", "mask_token", "skip", "bottom_up", "norm_pix_loss")
        if getattr(args, key) is not None
    }
    if args.encoder_config is not None:
        model["encoder_config"] = args.encoder_config
    config = make_config(args.preset, data=args.data, model=model, **common_overrides(args))
    result = run_pretrain(
        config, args.output_dir, resume=args.resume, device=args.device, workers=args.workers,
        overwrite=args.overwrite, show_bar=not args.no_progress, epochs=args.epochs,
    )  # fmt: skip
    return exit_code(result.status)
