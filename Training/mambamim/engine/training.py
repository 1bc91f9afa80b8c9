"""One training skeleton for pre-training and fine-tuning: :func:`run_training` with a small recipe.

The skeleton owns what every run does the same way: distributed start, resume or a fresh output folder,
the shared settings validated once (:class:`TrainingConfig`), the sampler and the number of optimiser
steps per epoch (computed here, once), AdamW with warm-up/cosine (groups may stay frozen for some
epochs), ``config.json``, the CSV logs, the loop (:mod:`mambamim.engine.loop`) and its checkpoints.
A :class:`Recipe` supplies what differs: the training set, the model, the loss, what happens at the end
of an epoch (validation, exports) and the result. Further ``hooks`` run after the recipe's at every
epoch end (``hook(run, loop, state, metrics)``), e.g. to draw progress.

Example::

    result = run_training(PretrainRecipe(), make_config("tiny", data="scans/"), "runs/mim")
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from monai.data import list_data_collate
from torch import nn

from mambamim.data.dataset import EpochSampler, VolumeDataset
from mambamim.data.intensity import CT_WINDOW, validate_intensity_spec
from mambamim.engine.distributed import DistributedContext, init_distributed, shutdown_distributed, wrap_model
from mambamim.engine.loop import LoopState, LossFn, TrainingLoop
from mambamim.engine.monitor import TrainingMonitor
from mambamim.engine.schedule import GroupWarmupCosine, build_optimizer
from mambamim.engine.setup import (
    check_checkpoint_every,
    config_to_dict,
    crops_per_volume_check,
    load_model_state,
    start_run,
    stderr_report,
    write_json_atomic,
)
from mambamim.errors import InvalidInput

FORMAT_VERSION = 1  # of pre-training and fine-tuning checkpoints
# The encoders' total stride: crops must be a whole number of the coarsest voxels.
CROP_MULTIPLE = 16


@dataclass
class TrainingConfig:
    """The settings every training run has (stored in checkpoints; ``--resume`` reuses them). Recipes
    extend it and may change defaults; :meth:`validate` checks the shared settings, once, for all."""

    data: str = ""
    preset: str = "paper"
    model: dict[str, Any] = field(default_factory=dict)  # constructor overrides
    roi: int = 96  # edge of the cubic training crops (voxels)
    num_samples: int = 4  # random crops per volume
    batch: int = 8  # crops per optimiser step and process
    epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 10.0
    min_lr_factor: float = 0.01
    grad_clip: float = 1.0
    spacing: list[float] = field(default_factory=lambda: [1.5, 1.5, 1.5])
    intensity: dict[str, Any] = field(default_factory=lambda: dict(CT_WINDOW))
    workers: int = 4
    seed: int = 0
    amp: bool = True
    cache: bool = True
    checkpoint_every: int = 0  # optimiser steps between checkpoints (0: at the end of each epoch only)

    def validate(self) -> None:
        if not self.data:
            raise InvalidInput(f"no training data given ({self.data_hint()})")
        check_checkpoint_every(self.checkpoint_every)
        if self.epochs < 1 or self.lr <= 0:
            raise InvalidInput(f"--epochs must be >= 1 and --lr > 0, got {self.epochs} and {self.lr}")
        if self.roi < CROP_MULTIPLE or self.roi % CROP_MULTIPLE:
            raise InvalidInput(
                f"--roi-size must be a positive multiple of {CROP_MULTIPLE} (the encoder's stride), "
                f"got {self.roi}"
            )
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise InvalidInput(f"--spacing must be 3 positive numbers (mm), got {self.spacing}")
        if self.min_lr_factor < 0 or self.warmup_epochs < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise InvalidInput("--warmup-epochs, --weight-decay and --grad-clip must be >= 0")
        self.intensity = validate_intensity_spec(self.intensity)
        crops_per_volume_check(self.batch, self.num_samples)

    def data_hint(self) -> str:
        """What ``data`` may be, in words (for the error when none is given)."""
        return "a scan folder, a scan file or a dataset.json"


@dataclass
class Run:
    """What a recipe is given: the validated settings, the process's place in the run, where to write."""

    config: Any  # the recipe's TrainingConfig subclass
    ctx: DistributedContext
    output_dir: Path
    report: Callable[[str], None]
    payload: dict[str, Any] | None  # the checkpoint being resumed, if any
    resume_path: Path | None
    show_bar: bool = True  # progress bars on a terminal (False: --no-progress)


@dataclass
class ModelSetup:
    """The model a recipe builds, and how the skeleton trains it."""

    model: nn.Module  # on the run's device, with any pre-trained weights (resumed weights come later)
    checkpoint_config: dict[str, Any]  # stored as checkpoint["config"] (and config.json), beside "training"
    param_groups: dict[str, list[tuple[str, nn.Parameter]]] | None = None  # default: one group, "all"
    frozen_epochs: dict[str, int] = field(default_factory=dict)  # group -> epochs at learning rate 0
    epoch_columns: list[str] = field(default_factory=list)  # the epoch log's metric columns
    find_unused_parameters: bool = False  # DDP: modules an ablation leaves without gradients
    extra: dict[str, Any] = field(default_factory=dict)  # initial LoopState.extra (e.g. best Dice)


class Recipe(Protocol):
    """What makes a run pre-training or fine-tuning."""

    checkpoint_format: str

    def datasets(self, run: Run) -> VolumeDataset:
        """The training set (a recipe keeps its validation set itself)."""
        ...

    def build_model(self, run: Run) -> ModelSetup: ...

    def loss(self, run: Run, setup: ModelSetup) -> LossFn: ...

    def on_epoch_end(self, run: Run, loop: TrainingLoop, state: LoopState) -> dict[str, Any]:
        """Metrics for the epoch log (validation, exports happen here)."""
        ...

    def finish(self, run: Run, loop: TrainingLoop, status: str, state: LoopState) -> Any:
        """The run's result (after the last epoch, or after an interruption)."""
        ...


EpochHook = Callable[[Run, TrainingLoop, LoopState, dict[str, Any]], None]


def run_training(
    recipe: Recipe,
    config: TrainingConfig,
    output_dir: str | os.PathLike,
    resume: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    show_bar: bool = True,
    hooks: Sequence[EpochHook] = (),
    epochs: int | None = None,
) -> Any:
    """Train ``recipe`` as ``config`` says (``resume``: a checkpoint path or "auto" = output/last.pt;
    ``epochs``: a larger total extends a resumed run); returns ``recipe.finish(...)``."""
    output_dir = Path(output_dir)
    ctx = init_distributed(device)
    report = stderr_report(ctx.is_main)
    try:
        fmt = recipe.checkpoint_format
        config, payload, resume_path = start_run(
            config, type(config), fmt, output_dir, resume, workers, overwrite, ctx, report, epochs
        )
        run = Run(config, ctx, output_dir, report, payload, resume_path, show_bar)
        dataset = recipe.datasets(run)
        setup = recipe.build_model(run)
        if payload is not None:
            load_model_state(setup.model, payload["model"], resume_path)
        ddp_model = wrap_model(setup.model, ctx, find_unused_parameters=setup.find_unused_parameters)

        sampler = EpochSampler(len(dataset), ctx.rank, ctx.world_size, seed=config.seed)
        batch_volumes = config.batch // config.num_samples
        steps_per_epoch = math.ceil(sampler.per_rank / batch_volumes)
        total_steps = steps_per_epoch * config.epochs
        optimizer, scheduler, state = _optimisation(setup, config, steps_per_epoch, payload)

        checkpoint_config = {**setup.checkpoint_config, "training": config_to_dict(config)}
        if ctx.is_main:
            write_json_atomic(output_dir / "config.json", checkpoint_config)
        monitor = TrainingMonitor(
            output_dir,
            total_steps,
            state.step,
            ctx.is_main,
            setup.epoch_columns,
            resumed=payload is not None,
            show_bar=show_bar,
        )

        def on_epoch_end(loop: TrainingLoop, loop_state: LoopState) -> dict[str, Any]:
            metrics = recipe.on_epoch_end(run, loop, loop_state)
            for hook in hooks:
                hook(run, loop, loop_state, metrics)
            return metrics

        loop = TrainingLoop(
            model=ddp_model,
            optimizer=optimizer,
            scheduler=scheduler,
            ctx=ctx,
            dataset=dataset,
            sampler=sampler,
            batch_volumes=batch_volumes,
            steps_per_epoch=steps_per_epoch,
            workers=config.workers,
            epochs=config.epochs,
            seed=config.seed,
            loss_fn=recipe.loss(run, setup),
            checkpoint_dir=output_dir,
            base_payload={
                "format": recipe.checkpoint_format,
                "format_version": FORMAT_VERSION,
                "config": checkpoint_config,
            },
            monitor=monitor,
            grad_clip=config.grad_clip,
            amp=config.amp,
            collate_fn=list_data_collate,
            on_epoch_end=on_epoch_end,
            rng_state=payload["rng"] if payload is not None else None,
            checkpoint_every=config.checkpoint_every,
        )
        try:
            status, state = loop.run(state)
        finally:
            monitor.close()
        return recipe.finish(run, loop, status, state)
    finally:
        shutdown_distributed()


def _optimisation(
    setup: ModelSetup, config: TrainingConfig, steps_per_epoch: int, payload: dict[str, Any] | None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, LoopState]:
    """AdamW over the setup's parameter groups, warm-up/cosine per step (a frozen group at 0 for its
    epochs), and the loop's starting state, all restored from ``payload`` when resuming."""
    groups = setup.param_groups or {"all": list(setup.model.named_parameters())}
    optimizer = build_optimizer(groups, config.lr, config.weight_decay)
    frozen = {name: epochs * steps_per_epoch for name, epochs in setup.frozen_epochs.items() if epochs}
    scheduler = GroupWarmupCosine(
        optimizer, round(config.warmup_epochs * steps_per_epoch), steps_per_epoch * config.epochs,
        config.min_lr_factor, frozen=frozen,
    )  # fmt: skip
    state = LoopState(extra=dict(setup.extra))
    if payload is not None:
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        state = LoopState(
            int(payload["epoch"]), int(payload["step"]), int(payload.get("batch_in_epoch", 0)),
            dict(payload.get("extra") or state.extra),
        )  # fmt: skip
    return optimizer, scheduler, state
