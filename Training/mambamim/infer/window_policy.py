"""Window policy: which sliding-window size and overlap a segmentation runs with.

On a CPU the convolutions already run near the processor's peak (a default HyMamba 96³ window: 86 % of
the time in convolutions), so only fewer voxel-evaluations make a whole scan faster. Larger windows
need fewer of them for the same volume (less of each window is overlap), and a lower overlap needs
fewer windows. ``"large"`` picks, among cubic windows from the card's ROI up to
``MAX_ROI_SCALE`` times it (multiples of the network's ``size_multiple``, capped per axis at the model
grid), the one with the fewest voxel-evaluations at overlap ``LARGE_OVERLAP`` whose activations fit in
``MEMORY_FRACTION`` of the free memory (estimate from :mod:`mambamim.infer.memory`); ``"card"`` keeps
the card's ROI and overlap. Networks without ``size_multiple`` (a fixed input size) always keep the card.

Policies: ``"card"`` (the model card's ROI and overlap), ``"large"`` (as above), ``"auto"`` (currently
``"card"`` on every device: see ``AUTO_POLICY``; agreement with the card path is measured by
``Testing/benchmarks/bench_cpu_policy.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from mambamim.errors import InvalidInput
from mambamim.infer.memory import ACTIVATION_PEAK_FRACTION

POLICIES = ("auto", "card", "large")
# What "auto" means per device; "large" was measured against "card" on the sample CT (README).
AUTO_POLICY = {"cpu": "card", "cuda": "card"}
LARGE_OVERLAP = 0.25
MAX_ROI_SCALE = 5 / 3  # 96³ -> at most 160³, the largest size measured with the default HyMamba
MEMORY_FRACTION = 0.5  # of the free memory, for the activations of one window


@dataclass(frozen=True)
class WindowPlan:
    """ROI and overlap of a run, with the window count and voxel-evaluations they imply."""

    policy: str
    roi: tuple[int, ...]
    overlap: float
    windows: int
    voxel_evaluations: int
    reason: str


def window_count(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Windows of MONAI's grid (as :func:`mambamim.infer.sliding_window.window_slices`) over an image
    padded up to ``roi``."""
    count = 1
    for size, r in zip(image_size, roi):
        size = max(int(size), int(r))
        interval = r if r >= size else max(int(r * (1.0 - overlap)), 1)
        count *= 1 + max(0, math.ceil((size - r) / interval))
    return count


def _plan(policy: str, shape, roi, overlap: float, reason: str) -> WindowPlan:
    windows = window_count(shape, roi, overlap)
    return WindowPlan(policy, tuple(roi), overlap, windows, windows * int(np.prod(roi)), reason)


def resolve_policy(policy: str, device_type: str) -> str:
    if policy not in POLICIES:
        raise InvalidInput(f"unknown window policy {policy!r}; valid: {', '.join(POLICIES)}")
    return AUTO_POLICY.get(device_type, "card") if policy == "auto" else policy


def plan_windows(
    network: nn.Module,
    model_shape: Sequence[int],
    card_roi: Sequence[int],
    card_overlap: float,
    *,
    policy: str,
    device_type: str,
    activation_per_voxel: float,
    free_bytes: int,
) -> WindowPlan:
    """The window plan for one run; ``activation_per_voxel`` from
    :func:`mambamim.infer.memory.activation_bytes_per_voxel`, ``free_bytes`` on the network's device."""
    chosen = resolve_policy(policy, device_type)
    card_roi = [int(r) for r in card_roi]
    card = _plan("card", model_shape, card_roi, card_overlap, "the model card's window and overlap")
    if chosen == "card":
        return card
    multiple = getattr(network, "size_multiple", None)
    if not isinstance(multiple, int) or multiple < 1:
        return _plan("card", model_shape, card_roi, card_overlap, "the network takes one input size only")
    budget = MEMORY_FRACTION * free_bytes
    largest = max(card_roi)
    best = _plan("large", model_shape, card_roi, LARGE_OVERLAP, f"overlap {LARGE_OVERLAP}, card window")
    for side in range(largest, int(largest * MAX_ROI_SCALE) + 1, multiple):
        # never larger than the grid (rounded up to the network's multiple), never smaller than the card
        roi = [max(r, min(side, math.ceil(s / multiple) * multiple)) for s, r in zip(model_shape, card_roi)]
        needed = ACTIVATION_PEAK_FRACTION * activation_per_voxel * float(np.prod(roi))
        if needed > budget:
            break
        plan = _plan("large", model_shape, roi, LARGE_OVERLAP, "")
        if plan.voxel_evaluations < best.voxel_evaluations:
            best = plan
    reason = (
        f"fewest voxel-evaluations ({best.voxel_evaluations / card.voxel_evaluations:.2f}x the card's) "
        f"among windows up to {int(largest * MAX_ROI_SCALE)} per side whose activations fit in "
        f"{MEMORY_FRACTION:.0%} of the free memory, overlap {LARGE_OVERLAP}"
    )
    return WindowPlan(best.policy, best.roi, best.overlap, best.windows, best.voxel_evaluations, reason)
