"""MambaMIM self-supervised pre-training (arXiv 2408.08070 §3, §4.1) on a folder of unlabelled scans.

Writes into the output folder: ``last.pt`` (full training state, every epoch, every
``checkpoint_every`` steps and on Ctrl-C),
``encoder.safetensors`` (encoder weights under ``encoder.*``, loadable into ``build_model("hymamba")``),
``config.json``, ``train_log.csv``, ``epochs.csv`` and TensorBoard logs when tensorboard is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mambamim.data.dataset import VolumeDataset
from mambamim.data.sources import scan_list
from mambamim.data.transforms import pretrain_transforms
from mambamim.engine.distributed import unwrap_model
from mambamim.engine.loop import LoopState, LossFn, TrainingLoop
from mambamim.engine.pretrained import ENCODER_FORMAT, encoder_metadata
from mambamim.engine.setup import apply_preset
from mambamim.engine.training import ModelSetup, Run, TrainingConfig, run_training
from mambamim.mim.model import PRETRAIN_FORMAT, MambaMIM
from mambamim.safe_write import safe_write

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
class PretrainConfig(TrainingConfig):
    """Every setting of a pre-training run: the shared ones (:class:`TrainingConfig`); ``model`` holds
    MambaMIM keyword arguments."""


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


def export_encoder(model: torch.nn.Module, path: Path, config: PretrainConfig | None = None) -> None:
    """``encoder.*`` weights (``MambaMIM.encoder_state_dict``) as safetensors, written atomically, with the
    architecture, spacing and intensity of ``config`` in the header (fine-tuning checks them)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in unwrap_model(model).encoder_state_dict().items()}
    with safe_write(path) as tmp:
        metadata = {"format": ENCODER_FORMAT}
        if config is not None:
            metadata = encoder_metadata(unwrap_model(model).config.as_dict(), config)
        save_file(tensors, str(tmp), metadata=metadata)


class PretrainRecipe:
    """MambaMIM pre-training on unlabelled scans (the recipe of :func:`run_training`)."""

    checkpoint_format = PRETRAIN_FORMAT

    def __init__(self) -> None:
        self.losses: list[float] = []

    def datasets(self, run: Run) -> VolumeDataset:
        config = run.config
        deterministic, random = pretrain_transforms(
            (config.roi,) * 3, config.num_samples, config.spacing, config.intensity
        )
        dataset = VolumeDataset(
            scan_list(config.data),
            deterministic,
            random,
            seed=config.seed,
            cache=config.cache,
            report=run.report,
        )
        run.report(
            f"pre-training on {len(dataset)} scan(s) from {config.data}"
            + (f" ({len(dataset.skipped)} skipped)" if dataset.skipped else "")
        )
        return dataset

    def build_model(self, run: Run) -> ModelSetup:
        model = MambaMIM(**run.config.model).to(run.ctx.device)
        # Ablations (--no-skip, --no-bottom-up, learnable token) may leave modules without gradients.
        ablation = any(key in run.config.model for key in ("skip", "bottom_up", "mask_token"))
        return ModelSetup(
            model,
            {"model": model.config.as_dict()},
            epoch_columns=["mean_loss"],
            find_unused_parameters=ablation,
        )

    def loss(self, run: Run, setup: ModelSetup) -> LossFn:
        def loss_fn(net: torch.nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
            loss = net(batch["image"], generator=generator).loss
            self.losses.append(float(loss.detach()))
            return loss

        return loss_fn

    def on_epoch_end(self, run: Run, loop: TrainingLoop, state: LoopState) -> dict[str, Any]:
        if run.ctx.is_main:
            export_encoder(loop.model, run.output_dir / "encoder.safetensors", run.config)
        epoch_losses = self.losses[-loop.steps_per_epoch :]
        return {"mean_loss": sum(epoch_losses) / max(len(epoch_losses), 1)}

    def finish(self, run: Run, loop: TrainingLoop, status: str, state: LoopState) -> PretrainResult:
        if run.ctx.is_main and status == "completed":
            export_encoder(loop.model, run.output_dir / "encoder.safetensors", run.config)
            out = run.output_dir
            run.report(f"done: {out / 'last.pt'}, encoder weights {out / 'encoder.safetensors'}")
        last_loss = self.losses[-1] if self.losses else None
        return PretrainResult(
            status, run.output_dir, state.step, state.epoch, last_loss, unwrap_model(loop.model)
        )


def run_pretrain(
    config: PretrainConfig,
    output_dir: str | os.PathLike,
    resume: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    show_bar: bool = True,
    epochs: int | None = None,
) -> PretrainResult:
    """Pre-train MambaMIM as ``config`` says (``resume``: a checkpoint path or "auto" = output/last.pt)."""
    recipe = PretrainRecipe()
    return run_training(
        recipe, config, output_dir, resume, device, workers, overwrite, show_bar, epochs=epochs
    )
