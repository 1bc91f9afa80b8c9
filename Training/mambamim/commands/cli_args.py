"""Command-line options shared by ``mambamim pretrain`` and ``mambamim finetune`` (argparse only;
the values they take are parsed by the data layer).

Every training option defaults to ``None`` = "not given", so the preset (and, below it, the model
constructors) decide; only what the user types overrides them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

REMOVAL = "the next release"  # when the deprecated spellings (mambamim.commands.aliases) go away


def deprecation_notice(old: str, new: str) -> None:
    print(f"note: {old} is deprecated and will be removed in {REMOVAL}; use {new}", file=sys.stderr)


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object {{...}}, got {text!r}")
    return value


def intensity_spec(text: str) -> dict[str, Any]:
    """``--intensity``: ``ct``, ``zscore``, ``window:LOWER:UPPER`` or ``clip_zscore:LOWER:UPPER:MEAN:STD``;
    see :func:`mambamim.data.intensity.parse_intensity` (the deprecated ``mr`` and JSON spec print a
    notice)."""
    from mambamim.data.intensity import is_legacy_intensity, parse_intensity

    try:
        spec = parse_intensity(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--{exc}") from None
    if is_legacy_intensity(text):
        if text == "mr":
            deprecation_notice("--intensity mr", "--intensity zscore")
        else:
            deprecation_notice(
                "--intensity as JSON", "--intensity window:LOWER:UPPER (or ct, zscore, clip_zscore:...)"
            )
    return spec


def spacing(text: str) -> list[float]:
    """``--spacing``: see :func:`mambamim.data.spacing.parse_spacing`."""
    from mambamim.data.spacing import parse_spacing

    try:
        return parse_spacing(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--{exc}") from None


def add_common_arguments(parser: argparse.ArgumentParser, presets: tuple[str, ...]) -> None:
    run = parser.add_argument_group("run")
    run.add_argument("-o", "--output-dir", required=True, help="folder for checkpoints, logs and results")
    run.add_argument("--preset", default="paper", choices=presets, help="settings preset (default: paper)")
    run.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
        help="continue a run: CHECKPOINT, or OUTPUT_DIR/last.pt when no path is given; the run's saved "
        "settings are used (only --workers and --device may change; a larger --epochs extends the run)",
    )  # fmt: skip
    run.add_argument("--overwrite", action="store_true", help="start over in an output folder holding a run")
    run.add_argument(
        "--device", default="auto", choices=("auto", "cuda", "cpu"),
        help="auto: CUDA when available, else the CPU",
    )
    run.add_argument("--workers", type=int, help="data-loading worker processes")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (logs are still written)")
    run.add_argument(
        "--checkpoint-every", type=int, metavar="STEPS",
        help="also write last.pt every STEPS optimiser steps (default 0: at the end of each epoch); a run "
        "killed outright loses at most this interval, Ctrl-C loses nothing",
    )  # fmt: skip

    train = parser.add_argument_group("training (default: from --preset)")
    train.add_argument("--roi-size", dest="roi", type=int, help="edge of the cubic training crops (voxels)")
    train.add_argument("--num-samples", type=int, help="random crops per volume")
    train.add_argument("--batch", type=int, help="crops per optimiser step and process")
    train.add_argument("--epochs", type=int, help="passes over the training data")
    train.add_argument("--lr", type=float, help="peak AdamW learning rate")
    train.add_argument("--weight-decay", type=float, help="AdamW decoupled weight decay")
    train.add_argument("--warmup-epochs", type=float, help="linear warm-up before the cosine decay")
    train.add_argument("--grad-clip", type=float, help="max gradient norm (0 = off)")
    train.add_argument("--spacing", type=spacing, help="target voxel size in mm: 1.5 or 1.5,1.5,2")
    train.add_argument(
        "--intensity", type=intensity_spec,
        help="ct (the default), zscore, window:LOW:UP or clip_zscore:LOW:UP:MEAN:STD",
    )  # fmt: skip
    train.add_argument("--seed", type=int, help="seed of every random choice (crops, masks, split)")
    train.add_argument(
        "--no-amp", dest="amp", action="store_const", const=False, help="no bf16 autocast on CUDA"
    )
    train.add_argument("--no-cache", dest="cache", action="store_const", const=False,
                       help="load volumes on demand instead of caching them in memory")  # fmt: skip


def common_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The explicitly given training options, as config field overrides."""
    names = ("roi", "num_samples", "batch", "epochs", "lr", "weight_decay", "warmup_epochs", "grad_clip",
             "spacing", "intensity", "seed", "amp", "cache", "checkpoint_every")  # fmt: skip
    return {name: getattr(args, name) for name in names}


def exit_code(status: str) -> int:
    """0 when the run completed, 130 (like a shell's SIGINT status) when it stopped on Ctrl-C/SIGTERM."""
    return 0 if status == "completed" else 130
