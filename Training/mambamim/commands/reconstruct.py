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
    figure = parser.add_argument_group("figure")
    figure.add_argument(
        "--figure-format", choices=("png", "svg"), default="png", help="figure file format (default png)"
    )
    figure.add_argument("--figure-dpi", type=int, default=200, help="PNG resolution (default 200 dpi)")
    figure.add_argument(
        "--figure-raw", action="store_true",
        help="add a column with the decoder's raw prediction: the default reconstruction de-normalises "
        "each masked patch with that patch's TRUE mean and std (as the paper's figure), which makes even "
        "an untrained model look plausible; the raw column shows what the model itself predicted",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from mambamim.infer.progress import run_command

    return run_command(args.progress, lambda reporter, cancel: _reconstruct(args, reporter, cancel))


def _reconstruct(args: argparse.Namespace, reporter, cancel) -> dict[str, str]:
    import sys

    from mambamim.infer.recon_figure import FigureOptions
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
        figure=FigureOptions(args.figure_format, args.figure_dpi, args.figure_raw),
    )
    out = sys.stderr if args.progress == "json" else sys.stdout  # stdout carries only JSON in json mode
    print(
        f"reconstructed {result.crops} crop(s) in {result.seconds:.1f} s on {result.device}; "
        f"masked MSE {result.masked_mse:.4f}; wrote {', '.join(str(p) for p in result.outputs.values())}",
        file=out,
    )
    return {name: str(path) for name, path in result.outputs.items()}
