"""MambaMIM self-supervised pre-training (arXiv 2408.08070 §3, §4.1) on a folder of unlabelled scans.

Writes into the output folder: ``last.pt`` (full training state, every epoch, every
``checkpoint_every`` steps and on Ctrl-C),
``encoder.safetensors`` (encoder weights under ``encoder.*``, loadable into ``build_model("hymamba")``),
``config.json``, ``train_log.csv``, ``epochs.csv`` and TensorBoard logs when tensorboard is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.data import list_data_collate

from mambamim.data.dataset import EpochSampler, VolumeDataset
from mambamim.data.intensity import CT_WINDOW, validate_intensity_spec
from mambamim.data.sources import scan_list
from mambamim.data.transforms import pretrain_transforms
from mambamim.engine.distributed import init_distributed, shutdown_distributed, unwrap_model, wrap_model
from mambamim.engine.loop import LoopState, TrainingLoop
from mambamim.engine.monitor import TrainingMonitor
from mambamim.engine.schedule import GroupWarmupCosine, build_optimizer
from mambamim.engine.setup import (
    apply_preset,
    check_checkpoint_every,
    config_to_dict,
    crops_per_volume_check,
    load_model_state,
    start_run,
    stderr_report,
    write_json_atomic,
)
from mambamim.safe_write import safe_write

PRETRAIN_FORMAT = "mambamim-pretrain"
FORMAT_VERSION = 1

# Presets override only what they must; the MambaMIM / HyMamba constructors hold the architecture defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # §4.1: mask ratio 0.75, 96³ crops, batch 8, 100 epochs, AdamW lr 1e-4; the decoder at the authors'
    # width (their LightDecoder(width=768), halved per scale: about 91 M parameters with projections).
    "paper": {
        "model": {"mask_ratio": 0.75, "decoder_channels": [48, 96, 192, 384, 768]},
        "roi": 96,
        "batch": 8,
        "epochs": 100,
        "lr": 1e-4,
    },
    # CPU smoke runs: a ~0.1 M-parameter model on 32³ crops at 3 mm.
    "tiny": {
        "model": {
            "encoder_config": {
                "channels": [8, 16, 16, 24, 32],
                "blocks": [0, 1, 1, 1, 1],
                "expansion": [2, 2, 2, 2, 2],
                "mamba_depth": 1,
                "d_state": 4,
            },
            "decoder_channels": [8, 8, 16, 16, 32],
        },
        "roi": 32,
        "batch": 2,
        "num_samples": 2,
        "epochs": 2,
        "lr": 1e-3,
        "warmup_epochs": 0.0,
        "workers": 0,
        "spacing": [3.0, 3.0, 3.0],  # as the tiny fine-tuning preset: a checkpoint of one fits the other
    },
}


@dataclass
class PretrainConfig:
    """Every setting of a pre-training run (stored in checkpoints; ``--resume`` reuses it)."""

    data: str = ""
    preset: str = "paper"
    model: dict[str, Any] = field(default_factory=dict)  # MambaMIM keyword arguments
    roi: int = 96
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
            raise ValueError("no training data given (a scan folder, a scan file or a dataset.json)")
        check_checkpoint_every(self.checkpoint_every)
        if self.epochs < 1 or self.lr <= 0:
            raise ValueError(f"--epochs must be >= 1 and --lr > 0, got {self.epochs} and {self.lr}")
        if self.roi < 16 or self.roi % 16:
            raise ValueError(
                f"--roi-size must be a positive multiple of 16 (the encoder's stride), got {self.roi}"
            )
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"--spacing must be 3 positive numbers (mm), got {self.spacing}")
        self.intensity = validate_intensity_spec(self.intensity)
        crops_per_volume_check(self.batch, self.num_samples)


def make_config(preset: str = "paper", **overrides: Any) -> PretrainConfig:
    """Preset + explicit overrides (None = not given), e.g. ``make_config("tiny", data=path, epochs=3)``."""
    return apply_preset(PretrainConfig, PRESETS, preset, **overrides)


@dataclass
class PretrainResult:
    status: str  # "completed" | "interrupted"
    output_dir: Path
    step: int
    epoch: int
    last_loss: float | None
    model: torch.nn.Module  # the trained MambaMIM (this rank's copy)


def export_encoder(model: torch.nn.Module, path: Path) -> None:
    """``encoder.*`` weights (``MambaMIM.encoder_state_dict``) as safetensors, written atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in unwrap_model(model).encoder_state_dict().items()}
    with safe_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "mambamim-encoder"})


def run_pretrain(
    config: PretrainConfig,
    output_dir: str | os.PathLike,
    resume: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    show_bar: bool = True,
) -> PretrainResult:
    """Pre-train MambaMIM as ``config`` says (``resume``: a checkpoint path or "auto" = output/last.pt)."""
    from mambamim.mim.model import MambaMIM

    output_dir = Path(output_dir)
    ctx = init_distributed(device)
    report = stderr_report(ctx.is_main)
    try:
        config, payload, resume_path = start_run(
            config, PretrainConfig, PRETRAIN_FORMAT, output_dir, resume, workers, overwrite, ctx, report
        )

        roi = (config.roi,) * 3
        deterministic, random = pretrain_transforms(roi, config.num_samples, config.spacing, config.intensity)
        dataset = VolumeDataset(
            scan_list(config.data), deterministic, random, seed=config.seed, cache=config.cache, report=report
        )
        report(
            f"pre-training on {len(dataset)} scan(s) from {config.data}"
            + (f" ({len(dataset.skipped)} skipped)" if dataset.skipped else "")
        )
        sampler = EpochSampler(len(dataset), ctx.rank, ctx.world_size, seed=config.seed)

        model = MambaMIM(**config.model).to(ctx.device)
        if payload is not None:
            load_model_state(model, payload["model"], resume_path)
        # Ablations (--no-skip, --no-bottom-up, learnable token) may leave modules without gradients.
        ablation = any(key in config.model for key in ("skip", "bottom_up", "mask_token"))
        ddp_model = wrap_model(model, ctx, find_unused_parameters=ablation)
        optimizer = build_optimizer({"all": list(model.named_parameters())}, config.lr, config.weight_decay)
        batch_volumes = config.batch // config.num_samples
        steps_per_epoch = -(-sampler.per_rank // batch_volumes)
        total_steps = steps_per_epoch * config.epochs
        warmup = round(config.warmup_epochs * steps_per_epoch)
        scheduler = GroupWarmupCosine(optimizer, warmup, total_steps, config.min_lr_factor)
        state = LoopState()
        if payload is not None:
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            state = LoopState(
                int(payload["epoch"]), int(payload["step"]), int(payload.get("batch_in_epoch", 0))
            )

        training = config_to_dict(config)
        if ctx.is_main:
            write_json_atomic(output_dir / "config.json", {"model": model.config, "training": training})
        monitor = TrainingMonitor(
            output_dir,
            total_steps,
            state.step,
            ctx.is_main,
            epoch_columns=["mean_loss"],
            resumed=payload is not None,
            show_bar=show_bar,
        )
        losses: list[float] = []

        def loss_fn(net: torch.nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
            loss = net(batch["image"], generator=generator).loss
            losses.append(float(loss.detach()))
            return loss

        def on_epoch_end(loop_state: LoopState) -> dict[str, Any]:
            if ctx.is_main:
                export_encoder(model, output_dir / "encoder.safetensors")
            epoch_losses = losses[-steps_per_epoch:]
            return {"mean_loss": sum(epoch_losses) / max(len(epoch_losses), 1)}

        loop = TrainingLoop(
            model=ddp_model,
            optimizer=optimizer,
            scheduler=scheduler,
            ctx=ctx,
            dataset=dataset,
            sampler=sampler,
            batch_volumes=batch_volumes,
            workers=config.workers,
            epochs=config.epochs,
            seed=config.seed,
            loss_fn=loss_fn,
            checkpoint_dir=output_dir,
            base_payload={
                "format": PRETRAIN_FORMAT,
                "format_version": FORMAT_VERSION,
                "config": {"model": model.config, "training": training},
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
        if ctx.is_main and status == "completed":
            export_encoder(model, output_dir / "encoder.safetensors")
            report(f"done: {output_dir / 'last.pt'}, encoder weights {output_dir / 'encoder.safetensors'}")
        last_loss = losses[-1] if losses else None
        return PretrainResult(status, output_dir, state.step, state.epoch, last_loss, model)
    finally:
        shutdown_distributed()
