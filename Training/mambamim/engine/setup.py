"""Pieces both training entry points need: configs and presets, seeding, resume, output folder."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mambamim.checkpoint import CheckpointError, load_checkpoint
from mambamim.data.imageio import check_writable
from mambamim.engine.resume_extend import extend_epochs
from mambamim.errors import InvalidInput
from mambamim.nn.state_dict import strict_mismatch
from mambamim.safe_write import safe_write


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices); disable cuDNN autotuning, which picks kernels at random."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds third-party code using the global RNG)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False


def apply_preset(
    config_cls: type, presets: Mapping[str, dict[str, Any]], preset: str, **explicit: Any
) -> Any:
    """``config_cls`` from its defaults, then the ``preset``, then every explicit (not None) argument.

    Model overrides (``model``) merge key by key so that e.g. ``--mask-ratio`` keeps the preset's
    encoder size.
    """
    if preset not in presets:
        raise InvalidInput(f"unknown preset {preset!r}; valid presets: {', '.join(presets)}")
    values = copy.deepcopy(presets[preset])
    for key, value in explicit.items():
        if value is None:
            continue
        if key == "model":
            values["model"] = {**values.get("model", {}), **value}
        else:
            values[key] = value
    return config_cls(preset=preset, **values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Dataclass -> plain JSON-able dict (tuples become lists), as stored in checkpoints."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(config_cls: type, values: Mapping[str, Any], where: Path) -> Any:
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CheckpointError(f"checkpoint {where}: unknown training settings {unknown} (newer mambamim?)")
    return config_cls(**values)


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """``--resume`` alone means ``<output-dir>/last.pt``; a path is used as given."""
    if resume is None:
        return None
    path = output_dir / "last.pt" if resume == "auto" else Path(resume)
    if not path.is_file():
        raise CheckpointError(f"cannot resume: checkpoint {path} does not exist")
    return path


def load_resume(
    path: Path, expected_format: str, config_cls: type, world_size: int, report: Callable[[str], None]
) -> tuple[Any, dict[str, Any]]:
    """(training config, payload) of a checkpoint to resume; warns when the world size changed."""
    payload = load_checkpoint(path, expected_format=expected_format)
    for key in ("config", "model", "optimizer", "scheduler", "step", "epoch", "rng"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} cannot be resumed: it has no {key!r} entry")
    config = config_from_dict(config_cls, payload["config"]["training"], path)
    saved_world = int(payload.get("world_size", 1))
    if saved_world != world_size:
        report(
            f"warning: {path} was written by {saved_world} process(es), resuming with {world_size}: "
            "training continues but the data order differs from an uninterrupted run"
        )
    return config, payload


def load_model_state(model: torch.nn.Module, state_dict: dict[str, Any], path: Path) -> None:
    """Strict load; a checkpoint of another architecture or size is a clear error naming the file."""
    mismatch = strict_mismatch(model, state_dict)
    if mismatch is not None:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model (another architecture or size?): {mismatch}"
        )
    model.load_state_dict(state_dict)


def prepare_output_dir(output_dir: Path, resuming: bool, overwrite: bool) -> None:
    """Refuse to mix a new run into a folder holding another run's checkpoint."""
    if (output_dir / "last.pt").exists() and not resuming and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a training run (last.pt); pass --resume to continue it or "
            "--overwrite to start over"
        )
    check_writable(output_dir / "last.pt")  # now, not when the first checkpoint is due
    output_dir.mkdir(parents=True, exist_ok=True)


def start_run(
    config: Any,
    config_cls: type,
    checkpoint_format: str,
    output_dir: Path,
    resume: str | None,
    workers: int | None,
    overwrite: bool,
    ctx: Any,
    report: Callable[[str], None],
    epochs: int | None = None,
) -> tuple[Any, dict[str, Any] | None, Path | None]:
    """Common start of a training run: (config, resume payload, resumed checkpoint path; None if new).

    A resumed run takes its settings from the checkpoint (only ``workers`` may change, and ``epochs``
    may grow: ``engine.resume_extend``); the config is
    validated, rank 0 prepares the output folder, and every rank is seeded with ``seed + rank``.
    """
    resume_path = resolve_resume(resume, output_dir)
    payload = None
    if resume_path is not None:
        config, payload = load_resume(resume_path, checkpoint_format, config_cls, ctx.world_size, report)
        report(f"resuming {resume_path} at epoch {payload['epoch']}, step {payload['step']} (saved settings)")
        config = extend_epochs(config, payload, epochs, report)
    if workers is not None:
        config = dataclasses.replace(config, workers=workers)
    config.validate()
    if ctx.is_main:
        prepare_output_dir(output_dir, resuming=payload is not None, overwrite=overwrite)
    seed_everything(config.seed + ctx.rank)
    return config, payload, resume_path


def write_json_atomic(path: Path, content: Any) -> None:
    with safe_write(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def stderr_report(enabled: bool) -> Callable[[str], None]:
    """A print-to-stderr function for rank 0; silent elsewhere."""

    def report(message: str) -> None:
        if enabled:
            print(message, file=sys.stderr, flush=True)

    return report


def crops_per_volume_check(batch: int, num_samples: int) -> int:
    """Volumes per loader batch; ``--batch`` counts crops and must be a multiple of ``--num-samples``."""
    if batch < 1 or num_samples < 1:
        raise InvalidInput(f"--batch and --num-samples must be >= 1, got {batch} and {num_samples}")
    if batch % num_samples:
        raise InvalidInput(
            f"--batch {batch} (crops per step) must be a multiple of --num-samples {num_samples} "
            "(crops per volume)"
        )
    return batch // num_samples


def check_checkpoint_every(steps: int) -> None:
    if steps < 0:
        raise InvalidInput(f"--checkpoint-every must be >= 0 optimiser steps (0 = every epoch), got {steps}")
