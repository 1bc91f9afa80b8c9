"""`mambamim convert`: the authors' checkpoints (MambaMIM / HyMamba, Taming Mambas on nnU-Net) to ours."""

from __future__ import annotations

import argparse
from pathlib import Path

from mambamim.errors import InvalidInput

HELP = "convert an authors' checkpoint (MambaMIM/HyMamba or a Taming Mambas nnU-Net .pth) to safetensors"
SOURCES = ("mambamim", "taming-nnunet")  # mirrors mambamim.infer.convert.SOURCES (no torch import here)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="the authors' file (.pth), read with weights_only=True")
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES, help="whose code wrote it")
    parser.add_argument("-o", "--out", type=Path, required=True, help="converted weights (.safetensors)")
    parser.add_argument("--model", help="network name where the weights cannot tell (e.g. segmambaskip)")
    parser.add_argument("--model-config", type=str, default=None,
                        help="JSON constructor arguments to check against (default: inferred)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    import json

    from mambamim.infer.convert import convert_checkpoint

    if args.out.suffix != ".safetensors":
        raise InvalidInput(f"output {args.out} must end in .safetensors")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"output {args.out} already exists; pass --overwrite to replace it")
    config = None
    if args.model_config:
        try:
            config = json.loads(args.model_config)
        except json.JSONDecodeError as err:
            raise InvalidInput(f"--model-config is not valid JSON ({err})") from None
    conversion = convert_checkpoint(args.checkpoint, args.source, args.out, config, args.model)
    print(conversion.summary())
    print(f"wrote {args.out}")
    return 0
