"""Test helpers for the inference engine: a network whose labels are a known function of the input.

``ThresholdNet`` labels each voxel by how many of its ``thresholds`` the (normalised) intensity
exceeds. It is voxel-wise, so sliding-window blending cannot change its answer, and any geometry bug
(flip, shift, wrong spacing) shows up as labels out of place against thresholding the input directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from mambamim.data.intensity import CT_WINDOW, normalize_intensity
from mambamim.nn import registry
from torch import nn

THRESHOLD_MODEL = "test_threshold"
# In the CT window [-175, 250] HU: label 1 = body (above -154 HU: fat and soft tissue), 2 = bone (> ~229 HU).
THRESHOLDS = (0.05, 0.95)
LABELS = {"1": "body", "2": "bone"}


class ThresholdNet(nn.Module):
    """logit_c = s * sum_{i<c} (x - t_i): the argmax is the number of thresholds below x."""

    size_multiple: int = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 3, thresholds: Sequence[float] = THRESHOLDS):
        super().__init__()
        if out_channels != len(thresholds) + 1:
            raise ValueError(f"out_channels must be len(thresholds) + 1 = {len(thresholds) + 1}")
        self.in_channels = in_channels
        self.sharpness = nn.Parameter(torch.tensor(50.0))
        self.register_buffer("thresholds", torch.tensor(list(thresholds), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels, got {x.shape[1]}")
        if any(s % self.size_multiple for s in x.shape[2:]):
            raise ValueError(f"spatial size must be a multiple of {self.size_multiple}")
        steps = (x[:, :1] - self.thresholds.view(1, -1, 1, 1, 1)) * self.sharpness
        zero = torch.zeros_like(x[:, :1])
        return torch.cat([zero, torch.cumsum(steps, dim=1)], dim=1)


def register_threshold_model(monkeypatch) -> None:
    """Make ``build_model(THRESHOLD_MODEL)`` return a ThresholdNet (the registry maps names lazily)."""
    original = registry.model_class

    def model_class(name: str):
        return ThresholdNet if name == THRESHOLD_MODEL else original(name)

    monkeypatch.setattr(registry, "model_class", model_class)


def make_threshold_package(out_dir: Path, spacing=(3.0, 3.0, 3.0), roi=(32, 32, 32), modality="CT") -> Path:
    from mambamim.infer.package import make_card, save_package

    card = make_card(
        name="threshold-test",
        labels=LABELS,
        modality=modality,
        spacing=spacing,
        intensity=CT_WINDOW,
        roi_size=roi,
        overlap=0.25,
        training_data="none: a fixed intensity threshold",
    )
    net = ThresholdNet()
    return save_package(
        out_dir, model_name=THRESHOLD_MODEL, model_config={}, state_dict=net.state_dict(), card=card
    )


def expected_labels(image: sitk.Image) -> np.ndarray:
    """What ThresholdNet gives on the input grid itself (ITK array order z, y, x)."""
    x = normalize_intensity(sitk.GetArrayFromImage(image).astype(np.float32), CT_WINDOW)
    return np.searchsorted(np.asarray(THRESHOLDS), x, side="left").astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    a, b = a == value, b == value
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def run_segment(argv: list[str]) -> int:
    """``mambamim segment`` in this process (its errors raise, as ``cli.main`` would catch them)."""
    import argparse

    from mambamim.commands import segment as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))
