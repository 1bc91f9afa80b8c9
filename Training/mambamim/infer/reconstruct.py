"""Reconstruct a randomly masked scan with a pre-trained MambaMIM (paper Fig. 9).

Pipeline: read the scan; resample it to model space with the checkpoint's own training spacing and
intensity spec (:func:`mambamim.infer.preprocess.to_model_space`); pad it (with 0, the normalised
background) to a multiple of the training crop and cut it into non-overlapping crops; mask each crop
with its own random mask on the Mamba grid (exactly round(ratio·N) tokens, all crops drawn from one
generator seeded with ``seed``); reconstruct; put the crops back and map every result onto the input's
exact grid (:func:`mambamim.infer.preprocess.from_model_space`).

Outputs in ``output_dir`` (``<name>`` = input file name without suffix):
- ``<name>_masked.<fmt>``: the input with masked voxels set to the normalised background 0;
- ``<name>_reconstruction.<fmt>``: visible voxels from the input, masked voxels predicted (as the
  paper's figure); with ``norm_pix_loss`` checkpoints the prediction is per-patch normalised and is
  mapped back with each masked patch's true mean and standard deviation, exactly as the paper's and
  MAE's visualisations do, so only the structure inside a patch is the model's own;
- ``<name>_mask.<fmt>``: label map, 1 = masked;
- ``<name>_reconstruction.png``: original / masked / reconstruction in three planes (model space).

Intensities written: for a CT window spec the model's [0, 1] values are mapped back linearly to HU
(``lower + v·(upper - lower)``; values outside the window stay clipped to it); for a z-score spec the
volumes stay in z-score units (the per-volume statistics are not invertible from the model output).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mambamim.data.imageio import check_writable, image_suffix, read_image, write_image
from mambamim.data.intensity import CT_WINDOW, validate_intensity_spec
from mambamim.errors import InvalidInput
from mambamim.infer.preprocess import from_model_space, to_model_space
from mambamim.infer.progress import CancelToken, ProgressCallback, ProgressTracker
from mambamim.infer.recon_figure import FigureOptions, figure_details, save_reconstruction_figure
from mambamim.infer.segment import resolve_device
from mambamim.mim.masking import random_token_mask, upsample_mask
from mambamim.mim.model import MambaMIM, load_pretrain_checkpoint

FORMATS = ("nii.gz", "nrrd")
DEFAULT_SPACING = (1.5, 1.5, 1.5)
DEFAULT_ROI = 96
CROP_BATCH_VOXELS = 4 * 96**3


@dataclass
class ReconstructResult:
    """Written files (``masked``, ``reconstruction``, ``mask``, ``figure``), masked MSE and timing."""

    outputs: dict[str, Path]
    masked_mse: float
    crops: int
    seconds: float
    device: str


def output_paths(input_path: str | Path, output_dir: str | Path, fmt: str) -> dict[str, Path]:
    """Where :func:`reconstruct_file` writes for ``input_path``; a DICOM folder is named after the folder."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown output format {fmt!r}; valid: {', '.join(FORMATS)}")
    name = Path(input_path).name
    suffix = image_suffix(input_path)
    stem = name[: len(name) - len(suffix)] if suffix and name.lower().endswith(suffix) else name
    out = Path(output_dir)
    return {
        "masked": out / f"{stem}_masked.{fmt}",
        "reconstruction": out / f"{stem}_reconstruction.{fmt}",
        "mask": out / f"{stem}_mask.{fmt}",
        "figure": out / f"{stem}_reconstruction.png",
    }


def training_geometry(payload: dict[str, Any], path: str | Path) -> tuple[list[float], dict, int]:
    """(spacing, intensity spec, crop size) the checkpoint was pre-trained with (paper defaults if absent)."""
    training = (payload.get("config") or {}).get("training") or {}
    spacing = [float(s) for s in training.get("spacing", DEFAULT_SPACING)]
    intensity = validate_intensity_spec(training.get("intensity", CT_WINDOW))
    roi = int(training.get("roi", DEFAULT_ROI))
    if len(spacing) != 3 or min(spacing) <= 0 or roi < 16 or roi % 16:
        raise InvalidInput(f"checkpoint {path}: unusable training geometry (spacing {spacing}, crop {roi})")
    return spacing, intensity, roi


def to_output_intensity(array: np.ndarray, intensity: dict[str, Any]) -> np.ndarray:
    """Model-space values -> written values: HU for a CT window spec, unchanged for z-score."""
    if intensity["type"] == "window":
        return array * (intensity["upper"] - intensity["lower"]) + intensity["lower"]
    return array


def default_crop_batch(roi: int) -> int:
    """Crops per forward pass: about as many voxels as 4 crops of 96³ (the paper's), 1..64 crops."""
    return int(min(max(CROP_BATCH_VOXELS // roi**3, 1), 64))


@torch.no_grad()
def reconstruct_volume(
    model: MambaMIM,
    volume: np.ndarray,
    roi: int,
    mask_ratio: float,
    seed: int,
    device: torch.device,
    on_crop=None,
    cancel: CancelToken | None = None,
    batch: int | None = None,
    raw_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Mask and reconstruct a model-space ``volume``, ``batch`` crops per forward pass.

    Returns ``(masked, reconstruction, mask uint8, masked MSE)`` arrays of ``volume``'s shape. The masks
    are drawn for all crops up front, so the result does not depend on ``batch``; every crop masks the
    same number of tokens, so the mean of the batch losses weighted by batch size is the mean over crops.
    When given, ``raw_out`` (``volume``'s shape) receives the decoder's raw prediction (before per-patch
    de-normalisation).
    """
    shape = volume.shape
    padded_shape = [-(-s // roi) * roi for s in shape]
    padded = np.zeros(padded_shape, dtype=np.float32)
    padded[: shape[0], : shape[1], : shape[2]] = volume
    starts = list(itertools.product(*(range(0, s, roi) for s in padded_shape)))
    grid = (roi // model.size_multiple,) * 3
    masks = random_token_mask(len(starts), grid, mask_ratio, torch.Generator().manual_seed(seed))
    masked_out, recon_out = np.zeros_like(padded), np.zeros_like(padded)
    mask_out = np.zeros(padded_shape, dtype=np.uint8)
    batch = max(int(batch or default_crop_batch(roi)), 1)
    raw_padded = np.zeros_like(padded) if raw_out is not None else None
    loss_sum = 0.0
    for first in range(0, len(starts), batch):
        if cancel is not None:
            cancel.raise_if_cancelled()
        regions = [tuple(slice(s, s + roi) for s in start) for start in starts[first : first + batch]]
        x = torch.from_numpy(np.stack([padded[region] for region in regions])).to(device)[:, None]
        token_mask = masks[first : first + len(regions)].to(device)
        out = model(x, mask=token_mask)
        hidden = upsample_mask(token_mask, (roi,) * 3)
        masked = torch.where(hidden, torch.zeros_like(x), x)[:, 0].cpu().numpy()
        recon = torch.where(hidden, out.reconstruction, x)[:, 0].cpu().numpy()
        hidden_np = hidden[:, 0].cpu().numpy()
        raw = out.prediction[:, 0].float().cpu().numpy() if raw_padded is not None else None
        for i, region in enumerate(regions):
            masked_out[region], recon_out[region], mask_out[region] = masked[i], recon[i], hidden_np[i]
            if raw is not None:
                raw_padded[region] = raw[i]
        loss_sum += float(out.loss) * len(regions)
        if on_crop is not None:
            on_crop(first + len(regions), len(starts))
    crop = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    if raw_out is not None:
        raw_out[...] = raw_padded[crop]
    return masked_out[crop], recon_out[crop], mask_out[crop], loss_sum / len(starts)


def reconstruct_file(
    checkpoint: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    mask_ratio: float = 0.75,
    seed: int = 0,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    fmt: str = "nii.gz",
    overwrite: bool = False,
    batch: int | None = None,
    figure: FigureOptions | None = None,
) -> ReconstructResult:
    """Mask ``input_path`` at ``mask_ratio`` and reconstruct it with the MambaMIM ``checkpoint``.

    Writes the volumes listed in :func:`output_paths` on the input's exact grid plus the PNG figure.
    Refuses existing outputs unless ``overwrite`` (checked before any work); nothing is written when
    cancelled or on error. Progress: 10 % loading, 80 % reconstructing (per crop), 10 % writing.
    ``batch``: crops per forward pass (default :func:`default_crop_batch`).
    ``figure``: format, resolution and raw-prediction column of the figure (:class:`FigureOptions`).
    """
    t_start = time.perf_counter()
    figure = figure or FigureOptions()
    paths = output_paths(input_path, output_dir, fmt)
    paths["figure"] = paths["figure"].with_suffix(f".{figure.format}")
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"outputs already exist: {', '.join(existing)}; pass --overwrite to replace them"
        )
    check_writable(paths["masked"])  # before any work: a read-only folder is found now, not after it
    tracker = ProgressTracker(progress, {"load": 0.1, "reconstruct": 0.8, "write": 0.1})
    tracker.update("load", 0.0, f"reading {input_path}")
    torch_device = resolve_device(device)
    image = read_image(input_path)
    payload = load_pretrain_checkpoint(checkpoint, map_location="cpu")
    spacing, intensity, roi = training_geometry(payload, checkpoint)
    model = MambaMIM.from_payload(payload, checkpoint).to(torch_device).eval()
    del payload
    volume, ref = to_model_space(image, spacing, intensity)
    tracker.update("load", 1.0, f"model grid {list(volume.shape)} at {spacing} mm")

    def on_crop(done: int, total: int) -> None:
        tracker.update("reconstruct", done / total, f"crop {done}/{total}")

    raw = np.zeros_like(volume) if figure.raw else None
    masked, recon, mask, mse = reconstruct_volume(
        model, volume, roi, mask_ratio, seed, torch_device, on_crop, cancel, batch, raw_out=raw
    )
    if cancel is not None:
        cancel.raise_if_cancelled()
    tracker.update("write", 0.0, f"writing to {output_dir}")
    title = f"MambaMIM reconstruction, mask ratio {mask_ratio:g}, seed {seed}"
    volumes = {
        "masked": lambda: from_model_space(to_output_intensity(masked, intensity), ref, is_label=False),
        "reconstruction": lambda: from_model_space(
            to_output_intensity(recon, intensity), ref, is_label=False
        ),
        "mask": lambda: from_model_space(mask, ref, is_label=True),
    }
    outputs: dict[str, Path] = {}
    try:
        for name, make in volumes.items():
            outputs[name] = write_image(make(), paths[name], overwrite)
        outputs["figure"] = save_reconstruction_figure(
            paths["figure"], volume, masked, recon, title, mask=mask, raw=raw, dpi=figure.dpi,
            **figure_details(checkpoint, model, mask_ratio, seed, mse, intensity),
        )  # fmt: skip
    except BaseException:
        # All or nothing: a failed write removes what this call already wrote.
        for written in outputs.values():
            written.unlink(missing_ok=True)
        raise
    tracker.update("write", 1.0, f"masked MSE {mse:.4f}")
    crops = int(np.prod([-(-s // roi) for s in volume.shape]))
    return ReconstructResult(outputs, mse, crops, time.perf_counter() - t_start, str(torch_device))
