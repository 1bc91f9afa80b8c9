"""Convolutional building blocks shared by the segmentation networks.

Every block is written for channels-last 3-D tensors (``torch.channels_last_3d``): convolutions keep
that layout on CPU (oneDNN) and GPU, and the per-voxel ops here (channel LayerNorm, residual adds)
read it without permute copies. On ordinary contiguous tensors they compute exactly the same values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("instance", "layer", "batch")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, D, H, W) in channels-last memory order (a no-op when already so)."""
    return x.contiguous(memory_format=torch.channels_last_3d)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each voxel of a (B, C, D, H, W) map (ConvNeXt "channels_first").

    Purely per voxel, so it never mixes information between voxels. On a channels-last tensor the
    (B, D, H, W, C) view is contiguous and the normalisation runs on the last dimension with no copy.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 4, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return y.permute(0, 4, 1, 2, 3)


def make_norm(name: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``instance`` (affine, as GroupNorm with one group per channel,
    which has a channels-last CPU kernel), ``layer`` (per-voxel channel LayerNorm) or ``batch``."""
    if name == "instance":
        return nn.GroupNorm(channels, channels, eps=1e-5)
    if name == "layer":
        return ChannelLayerNorm(channels)
    if name == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"unknown norm {name!r} for argument 'norm'; valid: {', '.join(NORMS)}")


class ResidualConvBlock(nn.Module):
    """nnU-Net / MONAI ``UnetResBlock``-style block: conv-norm-act-conv-norm + shortcut, then act.

    The shortcut is a 1³ conv + norm when the channel count or stride changes, identity otherwise.
    Convolutions before a norm carry no bias (the norm would cancel it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm: str = "instance",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=pad, bias=False)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size, padding=pad, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                make_norm(norm, out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        if isinstance(self.shortcut, nn.Sequential):
            conv, norm = self.shortcut
            y += norm(pointwise_conv(x, conv))  # in place: no norm's backward needs its own output
        else:
            y += x
        return self.act(y)


def pointwise_conv(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """``conv(x)``; a stride-1 1³ conv runs as a matmul on the channels-last (B, D, H, W, C) view, which
    CPU backends otherwise route to a slow non-oneDNN kernel (with a layout copy) at some thread counts."""
    if conv.kernel_size != (1, 1, 1) or conv.stride != (1, 1, 1) or conv.groups != 1:
        return conv(x)
    y = F.linear(x.permute(0, 2, 3, 4, 1), conv.weight.flatten(1), conv.bias)
    return y.permute(0, 4, 1, 2, 3)


def upsample_transposed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv_transpose3d(x, weight, bias, stride=k)`` for a k³ kernel (no overlap), as one matmul.

    Each input voxel expands to its own k³ output patch, so the op is (B·D·H·W, Cin) @ (Cin, k³·Cout)
    followed by one interleaving copy. Faster than the generic CPU kernel, and the result is
    channels-last whatever the input layout.
    """
    b, cin, d, h, w = x.shape
    cout, k = weight.shape[1], weight.shape[2]
    wmat = weight.permute(0, 2, 3, 4, 1).reshape(cin, k**3 * cout)
    rows = x.permute(0, 2, 3, 4, 1).reshape(-1, cin)
    y = rows @ wmat if bias is None else torch.addmm(bias.repeat(k**3), rows, wmat)
    y = y.view(b, d, h, w, k, k, k, cout).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return y.reshape(b, d * k, h * k, w * k, cout).permute(0, 4, 1, 2, 3)


class UpBlock(nn.Module):
    """UNETR decoder step: transposed conv ×``scale``, concatenate the skip, residual conv block."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        scale: int = 2,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose3d(in_channels, out_channels, scale, stride=scale, bias=False)
        self.block = ResidualConvBlock(out_channels + skip_channels, out_channels, kernel_size, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = upsample_transposed(x, self.upsample.weight, self.upsample.bias)
        # Both halves channels-last, so the concatenation (and every conv after it) stays channels-last.
        return self.block(torch.cat((x, channels_last(skip)), dim=1))


def check_input(x: torch.Tensor, in_channels: int, size_multiple: int, model: str) -> None:
    """Shared input validation of the segmentation-model convention: (B, in_channels, D, H, W), every
    spatial size a multiple of ``size_multiple``."""
    if x.ndim != 5:
        raise ValueError(f"{model}: input x must be (B, C, D, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model}: input x has {x.shape[1]} channels but the model has in_channels={in_channels}"
        )
    bad = [s for s in x.shape[2:] if s % size_multiple]
    if bad:
        raise ValueError(
            f"{model}: spatial size {tuple(x.shape[2:])} of input x must be a multiple of {size_multiple} "
            f"along every axis (pad or crop to a multiple of {size_multiple})"
        )
