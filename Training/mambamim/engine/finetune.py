"""Supervised fine-tuning of any zoo network (optionally from a MambaMIM encoder) and packaging.

Recipe (Swin UNETR BTCV / MambaMIM §4.1): 96³ crops with a 1:1 positive/negative ratio, 4 crops per
volume, flips / rotate90 / intensity scale and shift, Dice + cross-entropy, AdamW 1e-4, sliding-window
validation (overlap 0.5) with per-class Dice, best checkpoint kept. Writes into the output folder
``last.pt``, ``best.pt``, ``config.json``, the CSV logs and, at the end, a model package (``package/``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mambamim.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mambamim.data.dataset import VolumeDataset
from mambamim.data.label_checks import check_label_values
from mambamim.data.nnunet_raw import (
    channel_warning,
    find_nnunet_dataset,
    nnunet_training_items,
    read_nnunet_dataset,
)
from mambamim.data.progress_bars import terminal_bar
from mambamim.data.sources import has_list, kfold_split, load_dataset_json, load_label_table, paired_folders
from mambamim.data.transforms import finetune_transforms, validation_transforms
from mambamim.engine.distributed import DistributedContext, unwrap_model
from mambamim.engine.loop import LoopState, LossFn, TrainingLoop
from mambamim.engine.pretrained import check_encoder_fit, warn_on_setting_changes
from mambamim.engine.setup import apply_preset
from mambamim.engine.training import ModelSetup, Run, TrainingConfig, run_training
from mambamim.errors import InvalidInput
from mambamim.infer.card_metrics import card_metrics
from mambamim.infer.package import FINETUNE_FORMAT, package_checkpoint

PRESETS: dict[str, dict[str, Any]] = {
    # 96³, 4 crops/volume (1:1 pos/neg), batch 1 volume, AdamW 1e-4, validation overlap 0.5.
    "paper": {"roi": 96, "num_samples": 4, "batch": 4, "lr": 1e-4, "epochs": 1000},
    # CPU smoke runs: a tiny HyMamba on 32³ crops at 3 mm.
    "tiny": {
        "model": {
            "channels": [8, 16, 16, 24, 32], "blocks": [0, 1, 1, 1, 1], "expansion": [2, 2, 2, 2, 2],
            "mamba_depth": 1, "d_state": 4,
        },
        "roi": 32, "num_samples": 2, "batch": 2, "epochs": 2, "lr": 2e-3, "spacing": [3.0, 3.0, 3.0],
        "workers": 0, "sw_batch": 8,
    },
}  # fmt: skip


@dataclass
class FinetuneConfig(TrainingConfig):
    """Every setting of a fine-tuning run: the shared ones (:class:`TrainingConfig`, with fine-tuning's
    defaults) and these; ``model`` holds constructor overrides (``out_channels`` is derived)."""

    labels_dir: str = ""  # with data = an image folder: the label maps, paired by name
    label_names: str = ""  # JSON label table; default: the dataset.json's "labels"
    model_name: str = "hymamba"
    pretrained: str = ""
    allow_partial_encoder: bool = False  # train on when --pretrained fits only in part
    freeze_encoder_epochs: int = 0
    batch: int = 4
    epochs: int = 1000
    val_every: int = 1
    weight_decay: float = 1e-5
    warmup_epochs: float = 0.0
    min_lr_factor: float = 0.0
    folds: int = 5
    fold: int = 0
    split: str = "auto"  # "auto": the dataset's own validation list if it has one, else K-fold
    modality: str = "CT"
    overlap: float = 0.5
    sw_batch: int = 4
    package_name: str = ""
    training_data: str = ""  # description for the model card
    license: str = "unspecified"

    def validate(self) -> None:
        super().validate()
        if self.val_every < 1:
            raise InvalidInput(f"--val-every must be >= 1, got {self.val_every}")
        if not 0.0 <= self.overlap < 1.0:
            raise InvalidInput(f"--overlap must be in [0, 1), got {self.overlap}")
        if self.modality not in ("CT", "MR"):
            raise InvalidInput(f"--modality must be CT or MR, got {self.modality!r}")
        if self.split not in ("auto", "kfold"):
            raise InvalidInput(f"--split must be auto or kfold, got {self.split!r}")
        if self.freeze_encoder_epochs < 0 or self.freeze_encoder_epochs >= self.epochs:
            raise InvalidInput(f"--freeze-encoder-epochs must be in [0, {self.epochs - 1}]")

    def data_hint(self) -> str:
        return "a dataset.json, an nnU-Net raw dataset, or an image folder with --labels-dir"


def make_config(preset: str = "paper", **overrides: Any) -> FinetuneConfig:
    """Preset + explicit overrides (None = not given)."""
    return apply_preset(FinetuneConfig, PRESETS, preset, **overrides)


@dataclass
class FinetuneResult:
    status: str  # "completed" | "interrupted"
    output_dir: Path
    step: int
    epoch: int
    best_dice: float | None
    metrics: dict[str, Any]
    package: Path | None


def dataset_split(config: FinetuneConfig) -> tuple[list[dict], list[dict], str]:
    """(train items, validation items, how the split was made)."""
    nnunet = find_nnunet_dataset(config.data)
    if nnunet is not None:
        items = nnunet_training_items(read_nnunet_dataset(nnunet))
    elif config.data.lower().endswith(".json"):
        items = load_dataset_json(config.data, "training")
        if config.split == "auto" and has_list(config.data, "validation"):
            return items, load_dataset_json(config.data, "validation"), "the dataset's validation list"
    elif config.labels_dir:
        items = paired_folders(config.data, config.labels_dir)
    else:
        raise InvalidInput(
            f"{config.data}: give a dataset.json, an nnU-Net raw dataset or an image folder with --labels-dir"
        )
    train, val = kfold_split(items, config.folds, config.fold, seed=0)
    how = f"fold {config.fold} of a {config.folds}-fold split (seed 0)"
    if len(items) == 1:
        how = "the single training case (validation on the training scan: optimistic)"
    return train, val, how


def label_table(config: FinetuneConfig) -> list[dict[str, Any]]:
    nnunet = find_nnunet_dataset(config.data)
    source = config.label_names or (str(nnunet / "dataset.json") if nnunet is not None else "")
    source = source or (config.data if config.data.lower().endswith(".json") else "")
    if not source:
        raise InvalidInput('--label-names is required with image/label folders (a JSON {"1": "spleen", ...})')
    return load_label_table(source)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Flat tensor dict from safetensors, a mambamim checkpoint or any weights-only torch state dict."""
    if not path.is_file():
        raise FileNotFoundError(f"--pretrained {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"--pretrained {path} is not a readable safetensors file: {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors have no common base
        raise CheckpointError(
            f"--pretrained {path} is corrupt or not a weights-only torch file ({exc})"
        ) from None
    if isinstance(state, dict) and "format" in state:
        state = load_checkpoint(path)["model"]
    elif isinstance(state, dict):
        for key in ("state_dict", "model", "net"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"--pretrained {path} holds no state dict of tensors")
    return state


def load_pretrained(model: nn.Module, path: Path, report, allow_partial: bool = False) -> None:
    """Load what fits, print matched / missing / unexpected; no matched encoder key is an error, and so
    is an encoder that fits only in part unless ``allow_partial``."""
    from mambamim.nn.state_dict import load_partial_state_dict

    weights = read_weights(path)
    result = load_partial_state_dict(model, weights)
    report(f"--pretrained {path}: {result.summary()}")
    has_encoder = any(k.startswith("encoder.") for k in model.state_dict())
    matched = [k for k in result.matched if k.startswith("encoder.")] if has_encoder else result.matched
    if not matched:
        what = "encoder keys (encoder.*)" if has_encoder else "keys"
        authors = any(k.startswith(("embeddings.", "sparse_encoder.", "mae.")) for k in weights)
        hint = "; it holds the MambaMIM authors' names: convert it first (mambamim convert --from mambamim)"
        raise InvalidInput(
            f"--pretrained {path}: no {what} match this model; is it a MambaMIM encoder for this "
            f"architecture and size? ({len(result.unexpected)} unexpected, "
            f"{len(result.shape_mismatched)} shape-mismatched){hint if authors else ''}"
        )
    check_encoder_fit(list(model.state_dict()), result, path, allow_partial, report)


def supervision_loss(loss_fn: nn.Module, output: Any, label: torch.Tensor) -> torch.Tensor:
    """Dice+CE; deep-supervision outputs (a list, finest first) are weighted 1, 1/2, 1/4... with the lowest
    resolution at 0, then normalised (nnU-Net's ``DeepSupervisionWrapper`` weights)."""
    if torch.is_tensor(output):
        return loss_fn(output, label)
    weights = [0.5**i for i in range(len(output))]
    if len(weights) > 1:
        weights[-1] = 0.0
    total = 0.0
    for weight, logits in zip(weights, output):
        target = label if logits.shape[2:] == label.shape[2:] else F.interpolate(label, logits.shape[2:])
        total = total + weight * loss_fn(logits, target)
    return total / sum(weights)


@torch.no_grad()
def validate(
    model: nn.Module,
    dataset: VolumeDataset,
    config: FinetuneConfig,
    labels: list[dict[str, Any]],
    ctx: DistributedContext,
) -> dict[str, Any]:
    """Sliding-window Dice per class (MONAI); classes absent from a case's reference are skipped (NaN)."""
    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric

    model.eval()
    num_classes = max(entry["value"] for entry in labels) + 1
    metric = DiceMetric(
        include_background=False, reduction="none", ignore_empty=True, num_classes=num_classes
    )
    use_amp = config.amp and ctx.device.type == "cuda"
    for index in terminal_bar(range(len(dataset)), "validating", "case"):
        item = dataset[index]
        image = item["image"][None].to(ctx.device)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = sliding_window_inference(
                image, (config.roi,) * 3, config.sw_batch, model, overlap=config.overlap, mode="gaussian"
            )
        prediction = logits.float().argmax(1, keepdim=True).cpu()
        metric(y_pred=prediction, y=item["label"][None].long())
    per_case = metric.aggregate()  # (cases, classes - 1), NaN where the class is absent from the reference
    model.train()
    dice: dict[str, float | None] = {}
    for entry in labels:
        column = per_case[:, entry["value"] - 1]
        present = column[~torch.isnan(column)]
        dice[entry["name"]] = float(present.mean()) if len(present) else None
    scored = [v for v in dice.values() if v is not None]
    return {"mean_dice": sum(scored) / len(scored) if scored else float("nan"), "dice": dice}


def _param_groups(model: nn.Module, freeze: bool) -> dict[str, list[tuple[str, nn.Parameter]]]:
    named = list(model.named_parameters())
    if not freeze:
        return {"all": named}
    encoder = [(n, p) for n, p in named if n.startswith("encoder.")]
    if not encoder:
        raise InvalidInput("--freeze-encoder-epochs needs a model with an 'encoder' submodule")
    return {"encoder": encoder, "rest": [(n, p) for n, p in named if not n.startswith("encoder.")]}


class FinetuneRecipe:
    """Supervised fine-tuning with sliding-window validation, ending in a model package."""

    checkpoint_format = FINETUNE_FORMAT

    def __init__(self, package_dir: str | os.PathLike | None = None, overwrite: bool = False) -> None:
        self.package_dir = package_dir
        self.overwrite = overwrite

    def datasets(self, run: Run) -> VolumeDataset:
        config = run.config
        self.labels = label_table(config)
        train_items, val_items, self.split_how = dataset_split(config)
        check_label_values(train_items + val_items, self.labels, show_bar=None if run.show_bar else False)
        if warning := channel_warning(config.data, config.intensity):
            run.report(warning)
        roi = (config.roi,) * 3
        deterministic, random = finetune_transforms(roi, config.num_samples, config.spacing, config.intensity)
        train_set = VolumeDataset(train_items, deterministic, random, config.seed, config.cache, run.report)
        self.val_set = VolumeDataset(
            val_items, validation_transforms(config.spacing, config.intensity, roi), None, config.seed,
            config.cache, run.report,
        )  # fmt: skip
        run.report(
            f"fine-tuning {config.model_name} on {len(train_set)} case(s), validating on {self.split_how}"
        )
        return train_set

    def build_model(self, run: Run) -> ModelSetup:
        from mambamim.nn import build_model

        config = run.config
        model_config = {"out_channels": max(e["value"] for e in self.labels) + 1, **config.model}
        model = build_model(config.model_name, **model_config).to(run.ctx.device)
        if run.payload is None and config.pretrained:
            load_pretrained(model, Path(config.pretrained), run.report, config.allow_partial_encoder)
            warn_on_setting_changes(
                Path(config.pretrained), config.model_name, config.model, config, run.report
            )
        freeze = config.freeze_encoder_epochs > 0
        return ModelSetup(
            model,
            # The label table and the split's caveat travel in every checkpoint: `package` needs no --labels.
            {
                "model_name": config.model_name, "model_config": model_config, "labels": self.labels,
                "validation": self.split_how,
            },
            param_groups=_param_groups(model, freeze),
            frozen_epochs={"encoder": config.freeze_encoder_epochs} if freeze else {},
            epoch_columns=["mean_dice", *(f"dice_{e['name']}" for e in self.labels)],
            extra={"best_dice": None, "best_epoch": None, "metrics": {}},
        )

    def loss(self, run: Run, setup: ModelSetup) -> LossFn:
        from monai.losses import DiceCELoss

        dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

        def loss_fn(net: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
            return supervision_loss(dice_ce, net(batch["image"]), batch["label"])

        return loss_fn

    def on_epoch_end(self, run: Run, loop: TrainingLoop, state: LoopState) -> dict[str, Any]:
        config = run.config
        last = state.epoch == config.epochs
        if not run.ctx.is_main or (state.epoch % config.val_every and not last):
            return {}
        metrics = validate(unwrap_model(loop.model), self.val_set, config, self.labels, run.ctx)
        row = {"mean_dice": metrics["mean_dice"], **{f"dice_{k}": v for k, v in metrics["dice"].items()}}
        best = state.extra.get("best_dice")
        if not math.isnan(metrics["mean_dice"]) and (best is None or metrics["mean_dice"] > best):
            state.extra.update(best_dice=metrics["mean_dice"], best_epoch=state.epoch, metrics=metrics)
            save_checkpoint(run.output_dir / "best.pt", loop.payload(state))
        loop.monitor.message(
            f"epoch {state.epoch}: validation mean Dice {metrics['mean_dice']:.4f} "
            f"(best {state.extra['best_dice']:.4f} at epoch {state.extra['best_epoch']})"
        )
        return row

    def finish(self, run: Run, loop: TrainingLoop, status: str, state: LoopState) -> FinetuneResult:
        package = None
        if run.ctx.is_main and status == "completed":
            package = write_package(
                run.config, self.labels, run.output_dir, Path(self.package_dir or run.output_dir / "package"),
                state, self.split_how, run.report, overwrite=self.overwrite or self.package_dir is None,
            )  # fmt: skip
        return FinetuneResult(
            status, run.output_dir, state.step, state.epoch, state.extra.get("best_dice"),
            state.extra.get("metrics", {}), package,
        )  # fmt: skip


def run_finetune(
    config: FinetuneConfig,
    output_dir: str | os.PathLike,
    resume: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    show_bar: bool = True,
    epochs: int | None = None,
    package_dir: str | os.PathLike | None = None,
) -> FinetuneResult:
    """Fine-tune as ``config`` says and write a model package (default ``<output_dir>/package``)."""
    recipe = FinetuneRecipe(package_dir, overwrite)
    return run_training(
        recipe, config, output_dir, resume, device, workers, overwrite, show_bar, epochs=epochs
    )


def write_package(
    config: FinetuneConfig,
    labels: Sequence[dict[str, Any]],
    output_dir: Path,
    package_dir: Path,
    state: LoopState,
    split_how: str,
    report,
    overwrite: bool,
) -> Path:
    """Package the best checkpoint (the last one when no validation improved) with a model card."""
    source = output_dir / "best.pt" if (output_dir / "best.pt").is_file() else output_dir / "last.pt"
    path = package_checkpoint(
        source,
        package_dir,
        labels=list(labels),
        training_data=config.training_data or f"fine-tuned on {config.data}",
        metrics=card_metrics(state.extra, split_how, config.epochs, state.step),
        description=f"{config.model_name} fine-tuned with mambamim finetune (preset {config.preset})"
        + (f" from {Path(config.pretrained).name}" if config.pretrained else ""),
        overwrite=overwrite,
    )
    report(f"model package written to {path} (weights of {source.name})")
    return path
