"""Random token masks: exact count per sample, reproducibility, consistency across encoder scales."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mambamim.mim.masking import masked_token_count, random_token_mask, upsample_mask
from mambamim.mim.model import MambaMIM

TINY = {"channels": (4, 4, 8, 8, 8), "blocks": (1, 1, 1, 1, 1), "expansion": (2, 2, 2, 2, 2),
        "mamba_depth": 1, "d_state": 4}  # fmt: skip


@pytest.mark.parametrize(("grid", "ratio"), [((6, 6, 6), 0.75), ((2, 3, 4), 0.5), ((3, 3, 3), 0.6)])
def test_exact_masked_count_per_sample(grid, ratio):
    mask = random_token_mask(5, grid, ratio)
    n = grid[0] * grid[1] * grid[2]
    assert mask.shape == (5, *grid) and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [round(ratio * n)] * 5
    # one independent mask per sample
    assert len({tuple(m.flatten().tolist()) for m in mask}) == 5


def test_paper_setting_masks_162_of_216_tokens():
    assert masked_token_count(216, 0.75) == 162


def test_generator_makes_masks_reproducible():
    a = random_token_mask(2, (6, 6, 6), 0.75, torch.Generator().manual_seed(3))
    b = random_token_mask(2, (6, 6, 6), 0.75, torch.Generator().manual_seed(3))
    c = random_token_mask(2, (6, 6, 6), 0.75, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, 0.01, 0.99])
def test_bad_ratios_are_refused(ratio):
    with pytest.raises(ValueError, match="mask ratio"):
        random_token_mask(1, (2, 2, 2), ratio)


def test_upsample_is_blockwise_nearest():
    mask = random_token_mask(2, (2, 3, 2), 0.5)
    up = upsample_mask(mask, (8, 12, 4))
    assert up.shape == (2, 1, 8, 12, 4)
    # every 4x4x2 block is constant and equals its token
    pooled_max = F.max_pool3d(up.float(), (4, 4, 2))
    pooled_min = -F.max_pool3d(-up.float(), (4, 4, 2))
    assert torch.equal(pooled_max, pooled_min)
    assert torch.equal(pooled_max.squeeze(1).bool(), mask)
    with pytest.raises(ValueError, match="multiple"):
        upsample_mask(mask, (7, 12, 4))


def test_model_masks_are_consistent_across_all_scales():
    model = MambaMIM(TINY, decoder_channels=(4, 4, 4, 4, 4))
    mask = random_token_mask(2, (2, 2, 3), 0.75)
    masks = model.level_masks(mask, (32, 32, 48))
    assert [tuple(m.shape[2:]) for m in masks] == [
        (32, 32, 48),
        (16, 16, 24),
        (8, 8, 12),
        (4, 4, 6),
        (2, 2, 3),
    ]
    for fine, coarse in zip(masks[:-1], masks[1:]):
        # the same physical region at every scale: pooling the finer mask gives the coarser one exactly
        assert torch.equal(F.max_pool3d(fine.float(), 2).bool(), coarse)
        assert torch.equal((-F.max_pool3d(-fine.float(), 2)).bool(), coarse)
    # the fraction of masked voxels at the input equals the token fraction
    assert masks[0].float().mean().item() == pytest.approx(mask.float().mean().item())
