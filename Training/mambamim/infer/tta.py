"""Test-time augmentation by mirroring, as nnU-Net v2 predicts by default.

nnU-Net's predictor (``nnUNetPredictor(use_mirroring=True)``) evaluates every window once per subset of
the mirror axes (all 3 spatial axes: 2³ = 8 passes), flips each output back and averages the logits.
Our fine-tuning flips crops along all three axes (``RandFlipd`` in :mod:`mambamim.data.transforms`), so
every axis is a valid mirror axis. Wrapping the network keeps the sliding window, its memory fallback
and its progress unchanged; the cost is one forward pass per flip (8x the inference time).

Default per device (``--tta`` / ``--no-tta`` override it): on for CUDA, where nnU-Net has it on and the
8 passes take seconds; off for the CPU, where they turn a minute into many (a clinician waiting in
Slicer) for a small gain in Dice.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

SPATIAL_AXES = (0, 1, 2)
TTA_DEFAULT = {"cpu": False, "cuda": True}


def mirror_combinations(axes: Sequence[int] = SPATIAL_AXES) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (the empty one first: the plain pass), as nnU-Net enumerates them."""
    return [combo for n in range(len(axes) + 1) for combo in itertools.combinations(axes, n)]


def use_tta(requested: bool | None, device_type: str) -> bool:
    """``requested`` when given (``--tta`` / ``--no-tta``), else the device's default."""
    return TTA_DEFAULT.get(device_type, False) if requested is None else bool(requested)


class MirroredNetwork(nn.Module):
    """``network`` averaged over mirrored copies of its (batch, channel, X, Y, Z) input.

    For each subset of ``axes`` the input is flipped, passed through the network and the logits are
    flipped back; the mean of all passes is returned (logits, as nnU-Net averages them).
    """

    def __init__(self, network: nn.Module, axes: Sequence[int] = SPATIAL_AXES) -> None:
        super().__init__()
        if not set(axes) <= set(SPATIAL_AXES):
            raise ValueError(f"mirror axes must be among {SPATIAL_AXES}, got {list(axes)}")
        self.network = network
        self.flips = [tuple(a + 2 for a in combo) for combo in mirror_combinations(axes)]

    @property
    def passes(self) -> int:
        return len(self.flips)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for dims in self.flips:
            out = self.network(torch.flip(x, dims) if dims else x)
            if isinstance(out, (list, tuple)):  # deep supervision: full resolution first
                out = out[0]
            out = torch.flip(out, dims) if dims else out
            total = out.float() if total is None else total + out.float()
        assert total is not None
        return total / len(self.flips)
