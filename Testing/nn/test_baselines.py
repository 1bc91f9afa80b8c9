"""MONAI UNETR / Swin UNETR baselines under the segmentation-model convention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mambamim.nn.baselines import SwinUNETRBaseline, UNETRBaseline

pytest.importorskip("einops")  # MONAI's attention blocks need it


def _backward_reaches(model: torch.nn.Module, logits: torch.Tensor, unused: str | None = None) -> None:
    F.cross_entropy(logits, torch.zeros(logits.shape[:1] + logits.shape[2:], dtype=torch.long)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None and not (unused and unused in n)]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_unetr_tiny_forward_backward():
    model = UNETRBaseline(
        2, 3, img_size=(32, 48, 16), hidden_size=12, mlp_dim=24, num_heads=2, feature_size=4
    )
    logits = model(torch.randn(1, 2, 32, 48, 16))
    assert logits.shape == (1, 3, 32, 48, 16)
    # MONAI's TransformerBlock always builds cross-attention norms, used only with cross-attention.
    _backward_reaches(model, logits, unused="norm_cross_attn")


def test_unetr_needs_its_training_window():
    model = UNETRBaseline(img_size=32, hidden_size=12, mlp_dim=24, num_heads=2, feature_size=4)
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(1, 1, 32, 32, 48))
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.randn(1, 1, 32, 32, 40))
    with pytest.raises(ValueError, match="in_channels=1"):
        model(torch.randn(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="img_size"):
        UNETRBaseline(img_size=40)


def test_swin_unetr_tiny_forward_backward_on_odd_size():
    model = SwinUNETRBaseline(
        1, 3, feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2
    )
    logits = model(torch.randn(1, 1, 32, 32, 64))
    assert logits.shape == (1, 3, 32, 32, 64)
    _backward_reaches(model, logits)
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 1, 32, 48, 32))


def test_default_sizes_match_the_published_baselines():
    unetr = sum(p.numel() for p in UNETRBaseline().parameters())
    swin = sum(p.numel() for p in SwinUNETRBaseline().parameters())
    assert abs(unetr - 92.6e6) / 92.6e6 < 0.02  # UNETR paper: 92.6 M
    assert abs(swin - 62.2e6) / 62.2e6 < 0.02  # Swin UNETR paper: 62.2 M
