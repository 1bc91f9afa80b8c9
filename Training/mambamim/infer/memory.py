"""Memory estimate before a segmentation starts, so a run that cannot fit is refused with advice.

estimate = weights + activations of ``sw_batch_size`` windows + stitching buffers (one float32 map
per class and a weight map over the model-space volume) + the input and label volumes.

Activations are a heuristic: a forward pass on a small probe cube records the bytes of every leaf
module's output, scaled linearly to the ROI. Under ``inference_mode`` most of those tensors are freed
before the peak, so only ``ACTIVATION_PEAK_FRACTION`` of that sum is counted. Calibration (CPU,
torch 2.13, huge pages as the CLI runs): one 96³ window of the default HyMamba sums 4.66 GB of leaf
outputs and raised peak RSS by 1.23 GB (0.26). Segmenting the sample CT at 1.5 mm with ``--fast``
(163x135x149 grid, 8 windows, ``Testing/benchmarks/bench_segment.py``) peaked at 2.24 GB RSS for
HyMamba and 2.51 GB for SwinUNETR; with 0.4 the estimates are 2.7 GB and 4.4 GB, on the safe side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psutil
import torch
from torch import nn

from mambamim.errors import InvalidInput

ACTIVATION_PEAK_FRACTION = 0.4
# Head room for the Python process, allocator fragmentation and the SimpleITK images.
FIXED_OVERHEAD_BYTES = 512 * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed on the network's device and on the stitching device."""

    weights: int
    activations: int  # for the whole window batch
    buffers: int  # stitching + volumes
    network_device: str
    stitch_device: str

    def needed_on(self, device: str) -> int:
        total = 0
        if device == self.network_device:
            total += self.weights + self.activations
        if device == self.stitch_device:
            total += self.buffers
        if device == "cpu":
            total += FIXED_OVERHEAD_BYTES
        return total


def available_bytes(device: torch.device | str) -> int:
    """Free memory on ``device``: the CUDA allocator's free bytes, or the system's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free) + int(torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return int(psutil.virtual_memory().available)


def activation_bytes_per_voxel(network: nn.Module, in_channels: int, roi_size: Sequence[int]) -> float:
    """Sum of leaf-module output bytes per input voxel, from one probe forward pass on the CPU."""
    multiple = int(getattr(network, "size_multiple", 16))
    probe_sizes = [(2 * multiple,) * 3, tuple(int(r) for r in roi_size)]
    for size in probe_sizes:
        total = 0

        def hook(_module, _inputs, output) -> None:
            nonlocal total
            for t in output if isinstance(output, (list, tuple)) else (output,):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()

        leaves = [m for m in network.modules() if not list(m.children())]
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            parameter = next(network.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
            with torch.inference_mode():
                network(torch.zeros(1, in_channels, *size, device=device))
        except (ValueError, RuntimeError):
            continue  # the network accepts only its own ROI size: probe with that one
        finally:
            for handle in handles:
                handle.remove()
        return total / float(np.prod(size))
    raise InvalidInput(f"the network rejected probe inputs of sizes {probe_sizes}")


def estimate_memory(
    network: nn.Module,
    *,
    in_channels: int,
    num_classes: int,
    model_shape: Sequence[int],
    roi_size: Sequence[int],
    sw_batch_size: int,
    network_device: str,
    stitch_device: str,
    activation_per_voxel: float | None = None,
) -> MemoryEstimate:
    """``activation_per_voxel`` (from :func:`activation_bytes_per_voxel`) is measured when not given."""
    weights = sum(p.numel() * p.element_size() for p in network.parameters())
    weights += sum(b.numel() * b.element_size() for b in network.buffers())
    per_voxel = activation_per_voxel
    if per_voxel is None:
        per_voxel = activation_bytes_per_voxel(network, in_channels, roi_size)
    roi_voxels = float(np.prod(roi_size))
    activations = int(ACTIVATION_PEAK_FRACTION * per_voxel * roi_voxels * sw_batch_size)
    voxels = float(np.prod([max(s, r) for s, r in zip(model_shape, roi_size)]))
    # class logits + weight map + input volume (float32) + label map (int64 argmax)
    buffers = int(voxels * (4 * (num_classes + 1 + in_channels) + 8))
    return MemoryEstimate(weights, activations, buffers, network_device, stitch_device)
