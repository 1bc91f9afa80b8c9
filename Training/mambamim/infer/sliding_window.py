"""Sliding-window inference with Gaussian blending, per-window progress, cancellation and OOM fallback.

The window grid and the Gaussian importance map come from MONAI (``dense_patch_slices``,
``compute_importance_map``), so results match ``monai.inferers.sliding_window_inference``; the loop is
ours because a GUI needs a progress report and a cancellation check *between* windows, and CUDA
out-of-memory needs a fallback: halve the window batch, then move the stitching buffers to the CPU
(the network keeps running on the GPU), then give up with advice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices
from torch import nn

from mambamim.errors import InvalidInput
from mambamim.infer.progress import CancelToken

WindowCallback = Callable[[int, int], None]  # (windows done, windows total)


def window_slices(
    image_size: Sequence[int], roi_size: Sequence[int], overlap: float
) -> list[tuple[slice, ...]]:
    """Spatial slices of every window over an image at least ``roi_size`` large (MONAI's grid)."""
    if not 0.0 <= overlap < 1.0:
        raise InvalidInput(f"overlap must be in [0, 1), got {overlap}")
    interval = [
        roi if roi >= size else max(int(roi * (1.0 - overlap)), 1) for size, roi in zip(image_size, roi_size)
    ]
    return dense_patch_slices(list(image_size), list(roi_size), interval)


def sliding_window_logits(
    volume: torch.Tensor,
    network: nn.Module,
    roi_size: Sequence[int],
    overlap: float,
    *,
    sw_batch_size: int = 1,
    sw_device: torch.device | str = "cpu",
    device: torch.device | str = "cpu",
    on_window: WindowCallback | None = None,
    cancel: CancelToken | None = None,
    report: Callable[[str], None] | None = None,
    sigma_scale: float = 0.125,
) -> torch.Tensor:
    """Blend the network's logits over windows of ``volume`` (C, X, Y, Z) into (classes, X, Y, Z).

    ``sw_device`` runs the network, ``device`` holds the stitched output (may differ: GPU network,
    CPU buffers for large volumes). ``cancel`` is checked before every window batch; ``on_window``
    is called after each batch. ``report`` receives a sentence whenever a memory fallback happens.
    """
    if volume.ndim != 4:
        raise InvalidInput(f"volume must be (channels, X, Y, Z), got shape {tuple(volume.shape)}")
    roi = [int(r) for r in roi_size]
    spatial = list(volume.shape[1:])
    # Pad small images up to the ROI (symmetric, like MONAI); 0 is background after normalisation.
    pad_before = [max(r - s, 0) // 2 for s, r in zip(spatial, roi)]
    pad_after = [max(r - s, 0) - b for s, r, b in zip(spatial, roi, pad_before)]
    if any(pad_before) or any(pad_after):
        pads = [p for pair in zip(reversed(pad_before), reversed(pad_after)) for p in pair]
        volume = F.pad(volume, pads, value=0.0)
    padded = list(volume.shape[1:])
    slices = window_slices(padded, roi, overlap)
    total = len(slices)
    sw_device, device = torch.device(sw_device), torch.device(device)
    importance = compute_importance_map(tuple(roi), mode="gaussian", sigma_scale=sigma_scale, device=device)
    output: torch.Tensor | None = None
    weight = torch.zeros([1, *padded], dtype=torch.float32, device=device)
    report = report or (lambda message: None)

    start = 0
    batch = max(int(sw_batch_size), 1)
    while start < total:
        if cancel is not None:
            cancel.raise_if_cancelled()
        chunk = slices[start : start + batch]
        windows = torch.stack([volume[(slice(None), *sl)] for sl in chunk]).to(sw_device)
        try:
            with torch.inference_mode():
                logits = network(windows)
            if isinstance(logits, (list, tuple)):  # deep supervision in train mode: full resolution first
                logits = logits[0]
            logits = logits.to(device=device, dtype=torch.float32)
            if output is None:
                output = torch.zeros([logits.shape[1], *padded], dtype=torch.float32, device=device)
        except torch.OutOfMemoryError:
            del windows
            if sw_device.type == "cuda":
                torch.cuda.empty_cache()
            if batch > 1:
                batch = max(batch // 2, 1)
                report(f"out of memory: retrying with sw_batch_size={batch}")
                continue
            if device.type != "cpu":
                device = torch.device("cpu")
                weight, importance = weight.to(device), importance.to(device)
                output = None if output is None else output.to(device)
                if sw_device.type == "cuda":
                    torch.cuda.empty_cache()
                report("out of memory: stitching the output on the CPU, the network stays on the GPU")
                continue
            raise MemoryError(
                f"out of memory with one {tuple(roi)} window on {sw_device}; use --device cpu, --fast, "
                "or a machine with more memory"
            ) from None
        for i, sl in enumerate(chunk):
            region = (slice(None), *sl)
            output[region] += logits[i] * importance
            weight[region] += importance
        start += len(chunk)
        if on_window is not None:
            on_window(start, total)
    assert output is not None  # at least one window always exists
    output /= weight
    crop = tuple(slice(b, b + s) for b, s in zip(pad_before, spatial))
    return output[(slice(None), *crop)]
