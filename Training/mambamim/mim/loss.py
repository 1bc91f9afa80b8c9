"""MambaMIM reconstruction loss (arXiv 2408.08070, §3.4): MSE on masked voxels only.

Targets are normalised per non-overlapping ``patch``³ block (mean and variance over the block's voxels
and channels, MAE's "norm pix" target) unless that option is off; the network then predicts the
normalised intensities, and :func:`denormalize_patches` maps a prediction back to image intensities.
"""

from __future__ import annotations

import torch

from mambamim.errors import InvalidInput


def _blocks(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, C, d, p, h, p, w, p) view with d = D / p etc."""
    if x.dim() != 5:
        raise InvalidInput(f"expected a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
    b, c, *size = x.shape
    if patch < 1 or any(s % patch for s in size):
        raise InvalidInput(f"spatial size {tuple(size)} is not a multiple of the normalisation patch {patch}")
    d, h, w = (s // patch for s in size)
    return x.reshape(b, c, d, patch, h, patch, w, patch)


def patch_statistics(x: torch.Tensor, patch: int, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (population variance + ``eps``) of every ``patch``³ block of ``x``.

    Returns two tensors of ``x``'s shape (each voxel carries its block's statistics).
    """
    blocks = _blocks(x, patch)
    dims = (1, 3, 5, 7)
    mean = blocks.mean(dim=dims, keepdim=True)
    std = (blocks.var(dim=dims, keepdim=True, unbiased=False) + eps).sqrt()
    return mean.expand_as(blocks).reshape(x.shape), std.expand_as(blocks).reshape(x.shape)


def normalize_patches(x: torch.Tensor, patch: int, eps: float = 1e-6) -> torch.Tensor:
    """``x`` with every ``patch``³ block shifted to zero mean and scaled to unit variance."""
    mean, std = patch_statistics(x, patch, eps)
    return (x - mean) / std


def denormalize_patches(prediction: torch.Tensor, reference: torch.Tensor, patch: int, eps: float = 1e-6):
    """Map a per-patch normalised ``prediction`` back to intensities with ``reference``'s block statistics."""
    mean, std = patch_statistics(reference, patch, eps)
    return prediction * std + mean


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the voxels where ``mask`` is True (masked), averaged over channels.

    ``mask`` is (B, 1, D, H, W) or (B, D, H, W) bool at the prediction's resolution.
    """
    if prediction.shape != target.shape:
        raise InvalidInput(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
    if mask.dim() == 4:
        mask = mask.unsqueeze(1)
    if mask.shape[0] != prediction.shape[0] or mask.shape[2:] != prediction.shape[2:]:
        raise InvalidInput(f"mask {tuple(mask.shape)} does not match prediction {tuple(prediction.shape)}")
    weight = mask.to(prediction.dtype)
    count = weight.sum() * prediction.shape[1]
    if not bool(count > 0):
        raise InvalidInput("the mask hides no voxel, so the masked reconstruction loss is undefined")
    return ((prediction - target).square() * weight).sum() / count


def mim_loss(
    prediction: torch.Tensor,
    image: torch.Tensor,
    mask: torch.Tensor,
    norm_pix_loss: bool = True,
    norm_patch: int = 16,
) -> torch.Tensor:
    """Pre-training loss: MSE of ``prediction`` against the (patch-normalised) ``image`` on masked voxels."""
    # float32 regardless of autocast: the loss is a mean over ~10^5 voxels per crop.
    image = image.float()
    target = normalize_patches(image, norm_patch) if norm_pix_loss else image
    return masked_mse(prediction.float(), target, mask)
