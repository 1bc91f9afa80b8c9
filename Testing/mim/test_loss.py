"""MambaMIM loss: only masked voxels count; per-patch target normalisation."""

from __future__ import annotations

import pytest
import torch
from mambamim.mim.loss import denormalize_patches, masked_mse, mim_loss, normalize_patches, patch_statistics
from mambamim.mim.masking import random_token_mask, upsample_mask


def test_loss_counts_only_masked_voxels():
    image = torch.rand(2, 1, 16, 16, 16)
    mask = upsample_mask(random_token_mask(2, (2, 2, 2), 0.5), (16, 16, 16))
    prediction = torch.randn_like(image)
    base = mim_loss(prediction, image, mask, norm_patch=8)
    visible_changed = torch.where(mask, prediction, prediction + 100.0)
    assert mim_loss(visible_changed, image, mask, norm_patch=8) == base
    masked_changed = torch.where(mask, prediction + 1.0, prediction)
    assert mim_loss(masked_changed, image, mask, norm_patch=8) > base


def test_masked_mse_is_the_mean_over_masked_voxels():
    prediction = torch.zeros(1, 2, 2, 2, 2)
    target = torch.arange(16.0).view(1, 2, 2, 2, 2)
    mask = torch.zeros(1, 1, 2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0, 0, 0] = mask[0, 0, 1, 1, 1] = True
    # masked voxels: flat 0 and 7 in each of the two channels -> values 0, 7, 8, 15
    expected = (0**2 + 7**2 + 8**2 + 15**2) / 4
    assert masked_mse(prediction, target, mask).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="hides no voxel"):
        masked_mse(prediction, target, torch.zeros_like(mask))


def test_targets_are_normalised_per_patch():
    image = torch.rand(1, 1, 8, 8, 16) * torch.linspace(1, 50, 16)  # patches with very different scales
    normed = normalize_patches(image, 4)
    blocks = normed.reshape(1, 1, 2, 4, 2, 4, 4, 4)
    assert torch.allclose(blocks.mean(dim=(3, 5, 7)), torch.zeros(1, 1, 2, 2, 4), atol=1e-5)
    assert torch.allclose(blocks.var(dim=(3, 5, 7), unbiased=False), torch.ones(1, 1, 2, 2, 4), atol=1e-3)
    assert torch.allclose(denormalize_patches(normed, image, 4), image, atol=1e-4)
    mean, std = patch_statistics(image, 4)
    assert mean.shape == image.shape and bool((std > 0).all())


def test_normalisation_switch_changes_the_target():
    image = torch.rand(1, 1, 8, 8, 8) * 5 + 3
    mask = torch.ones(1, 1, 8, 8, 8, dtype=torch.bool)
    assert mim_loss(image, image, mask, norm_pix_loss=False).item() == 0.0
    assert mim_loss(image, image, mask, norm_pix_loss=True, norm_patch=4).item() > 1.0
    with pytest.raises(ValueError, match="multiple of the normalisation patch"):
        mim_loss(image, image, mask, norm_patch=3)
