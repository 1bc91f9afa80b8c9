"""`mambamim reconstruct`: mask a scan at random and reconstruct it with a pre-trained MambaMIM."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "mask a scan at random and reconstruct it with a MambaMIM pre-training checkpoint (paper Fig. 9)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="pre-training checkpoint (last.pt)")
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="image file (.nii.gz, .nrrd, .mgz...) or DICOM series folder",
    )
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="folder for the volumes and the figure"
    )
    parser.add_argument(
        "--mask-ratio", type=float, default=0.75, help="fraction of tokens masked (default 0.75)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random masks (default 0)")
    parser.add_argument(
        "--device", choices=("auto", "cuda", "cpu"), default="auto",
        help="auto: CUDA when available, else the CPU",
    )
    parser.add_argument(
        "--batch", type=int, default=None,
        help="crops per forward pass (default: as many voxels as four 96³ crops, at most 64 crops)",
    )  # fmt: skip
    parser.add_argument(
        "--progress", choices=("json", "bar", "none"), default="bar",
        help="json: one JSON line per update (for GUIs); bar: a progress bar; none: quiet",
    )
    parser.add_argument("--format", choices=("nrrd", "nii.gz"), default="nii.gz", help="volume file format")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args: argparse.Namespace) -> int:
    from mambamim.infer.progress import run_command

    return run_command(args.progress, lambda reporter, cancel: _reconstruct(args, reporter, cancel))


def _reconstruct(args: argparse.Namespace, reporter, cancel) -> dict[str, str]:
    import sys

    from mambamim.infer.reconstruct import reconstruct_file

    result = reconstruct_file(
        args.checkpoint,
        args.input,
        args.output_dir,
        mask_ratio=args.mask_ratio,
        seed=args.seed,
        device=args.device,
        progress=reporter,
        cancel=cancel,
        fmt=args.format,
        overwrite=args.overwrite,
        batch=args.batch,
    )
    out = sys.stderr if args.progress == "json" else sys.stdout  # stdout carries only JSON in json mode
    print(
        f"reconstructed {result.crops} crop(s) in {result.seconds:.1f} s on {result.device}; "
        f"masked MSE {result.masked_mse:.4f}; wrote {', '.join(str(p) for p in result.outputs.values())}",
        file=out,
    )
    return {name: str(path) for name, path in result.outputs.items()}
