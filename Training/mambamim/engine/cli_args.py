"""Command-line options shared by ``mambamim pretrain`` and ``mambamim finetune`` (argparse only).

Every training option defaults to ``None`` = "not given", so the preset (and, below it, the model
constructors) decide; only what the user types overrides them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# Errors a training command reports as one clear line (exit 1) instead of a traceback.
USER_ERRORS = (ValueError, OSError, RuntimeError)


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object {{...}}, got {text!r}")
    return value


def intensity_spec(text: str) -> dict[str, Any]:
    """``ct`` (window -175..250 HU), ``zscore`` (MRI), ``window:LOWER:UPPER`` or
    ``clip_zscore:LOWER:UPPER:MEAN:STD`` (nnU-Net's CT normalisation): the one ``--intensity`` syntax."""
    from mambamim.data.intensity import CT_WINDOW, MR_ZSCORE, validate_intensity_spec

    if text in ("ct", "zscore"):
        return dict(CT_WINDOW if text == "ct" else MR_ZSCORE)
    kind, _, rest = text.partition(":")
    fields = {"window": ("lower", "upper"), "clip_zscore": ("lower", "upper", "mean", "std")}.get(kind)
    parts = rest.split(":") if rest else []
    if fields is not None and len(parts) == len(fields):
        try:
            return validate_intensity_spec({"type": kind, **dict(zip(fields, (float(p) for p in parts)))})
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(
        "--intensity must be ct, zscore, window:LOWER:UPPER or clip_zscore:LOWER:UPPER:MEAN:STD, "
        f"got {text!r}"
    )


def spacing(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"--spacing must be one or three positive numbers (mm), got {text!r}"
        )
    return values


def add_common_arguments(parser: argparse.ArgumentParser, presets: tuple[str, ...]) -> None:
    run = parser.add_argument_group("run")
    run.add_argument("-o", "--output-dir", required=True, help="folder for checkpoints, logs and results")
    run.add_argument("--preset", default="paper", choices=presets, help="settings preset (default: paper)")
    run.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
        help="continue a run: CHECKPOINT, or OUTPUT_DIR/last.pt when no path is given; the run's saved "
        "settings are used (only --workers and --device may change)",
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


def report_error(exc: BaseException) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def exit_code(status: str) -> int:
    """0 when the run completed, 130 (like a shell's SIGINT status) when it stopped on Ctrl-C/SIGTERM."""
    return 0 if status == "completed" else 130
