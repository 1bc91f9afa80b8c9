"""Convolutional building blocks shared by the segmentation networks.

Every block is written for channels-last 3-D tensors (``torch.channels_last_3d``): convolutions keep
that layout on CPU (oneDNN) and GPU, and the per-voxel ops here (channel LayerNorm, residual adds)
read it without permute copies. On ordinary contiguous tensors they compute exactly the same values.

With autograd off on CPU (inference), blocks normalise the maps they own in place and write into
concatenation buffers directly (:func:`reuse_buffers`): there every fresh full-size map is paid for in
page faults, which cost more than the arithmetic of a norm (a quarter of a 96³ HyMamba forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("instance", "instance_noaffine", "layer", "batch")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, D, H, W) in channels-last memory order (a no-op when already so)."""
    return x.contiguous(memory_format=torch.channels_last_3d)


class _AffineNorm(nn.Module):
    """Base of the norms below: per-channel scale ``weight`` (ones), shift ``bias`` (zeros), ``eps``."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps


class ChannelLayerNorm(_AffineNorm):
    """LayerNorm over the channels of each voxel of a (B, C, D, H, W) map (ConvNeXt "channels_first").

    Purely per voxel, so it never mixes information between voxels. On a channels-last tensor the
    (B, D, H, W, C) view is contiguous and the normalisation runs on the last dimension with no copy.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__(channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 4, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return y.permute(0, 4, 1, 2, 3)


def reuse_buffers(x: torch.Tensor) -> bool:
    """Whether blocks may overwrite the temporaries they own and write into caller buffers: autograd is
    off (nothing needs the overwritten values) and ``x`` is on CPU, where fresh memory costs page faults
    (CUDA's caching allocator makes fresh buffers cheap, so GPUs keep the plain path)."""
    return x.device.type == "cpu" and not torch.is_grad_enabled()


class InstanceNorm(nn.Module):
    """Instance normalisation of (B, C, D, H, W) maps; with ``affine`` it has parameters ``weight`` and
    ``bias`` like ``nn.GroupNorm(C, C)`` and ``nn.InstanceNorm3d(C, affine=True)``, so state dicts
    interchange; without, it has none, like MONAI's default ``("instance", {"affine": False})``.

    ``forward`` is ``F.group_norm`` with one group per channel (a channels-last CPU kernel, autograd).
    ``normalize_`` overwrites its argument instead, for blocks normalising a conv output they own.
    """

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.channels, self.weight, self.bias, self.eps)

    def normalize_(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)`` computed in ``x``'s own memory (no autograd)."""
        for item in x.split(1):  # the batch statistics of a single item are its instance statistics
            mean, var = torch.batch_norm_update_stats(item, None, None, 0.0)
            scale = torch.rsqrt(var + self.eps)
            if self.weight is not None:
                scale = scale * self.weight
            shift = -mean * scale if self.bias is None else self.bias - mean * scale
            torch.addcmul(shift[:, None, None, None], item, scale[:, None, None, None], out=item)
        return x


def norm_(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` for an ``x`` the caller owns and no longer needs: in place where allowed."""
    if isinstance(norm, InstanceNorm) and reuse_buffers(x):
        return norm.normalize_(x)
    return norm(x)


def make_norm(name: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``instance`` (affine :class:`InstanceNorm`), ``instance_noaffine``
    (without parameters, MONAI's default), ``layer`` (per-voxel channel LayerNorm) or ``batch``."""
    if name == "instance":
        return InstanceNorm(channels)
    if name == "instance_noaffine":
        return InstanceNorm(channels, affine=False)
    if name == "layer":
        return ChannelLayerNorm(channels)
    if name == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"unknown norm {name!r} for argument 'norm'; valid: {', '.join(NORMS)}")


class ResidualConvBlock(nn.Module):
    """nnU-Net / MONAI ``UnetResBlock``-style block: conv-norm-act-conv-norm + shortcut, then act.

    The shortcut is a 1³ conv + norm when the channel count or stride changes, identity otherwise.
    By default convolutions before a norm carry no bias (an instance norm would cancel it); ``bias=True``
    gives them one, as the residual blocks of the published HyMamba (whose per-voxel LayerNorm keeps it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm: str = "instance",
        negative_slope: float = 0.01,
        bias: bool = False,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=pad, bias=bias)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size, padding=pad, bias=bias)
        self.norm2 = make_norm(norm, out_channels)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=bias),
                make_norm(norm, out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output; ``out`` (only when :func:`reuse_buffers`): a tensor of the output's shape,
        such as a slice of a concatenation buffer, to write it into."""
        y = self.act(norm_(self.norm1, self.conv1(x)))
        y = norm_(self.norm2, self.conv2(y))
        if isinstance(self.shortcut, nn.Sequential):
            conv, norm = self.shortcut
            shortcut = norm_(norm, pointwise_conv(x, conv))
        else:
            shortcut = x
        if out is not None:
            return self.act(torch.add(y, shortcut, out=out))
        y += shortcut  # in place: no norm's backward needs its own output
        return self.act(y)


def pointwise_conv(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """``conv(x)``; a stride-1 1³ conv runs as a matmul on the channels-last (B, D, H, W, C) view, which
    CPU backends otherwise route to a slow non-oneDNN kernel (with a layout copy) at some thread counts."""
    if conv.kernel_size != (1, 1, 1) or conv.stride != (1, 1, 1) or conv.groups != 1:
        return conv(x)
    y = F.linear(x.permute(0, 2, 3, 4, 1), conv.weight.flatten(1), conv.bias)
    return y.permute(0, 4, 1, 2, 3)


def upsample_transposed(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.conv_transpose3d(x, weight, bias, stride=k)`` for a k³ kernel (no overlap), as one matmul.

    Each input voxel expands to its own k³ output patch, so the op is (B·D·H·W, Cin) @ (Cin, k³·Cout)
    followed by one interleaving copy. Faster than the generic CPU kernel, and the result is
    channels-last whatever the input layout. ``out`` (no autograd): a channels-last (B, Cout, kD, kH,
    kW) tensor or slice to interleave into, instead of a new one.
    """
    b, cin, d, h, w = x.shape
    cout, k = weight.shape[1], weight.shape[2]
    wmat = weight.permute(0, 2, 3, 4, 1).reshape(cin, k**3 * cout)
    rows = x.permute(0, 2, 3, 4, 1).reshape(-1, cin)
    y = rows @ wmat if bias is None else torch.addmm(bias.repeat(k**3), rows, wmat)
    y = y.view(b, d, h, w, k, k, k, cout).permute(0, 1, 4, 2, 5, 3, 6, 7)
    if out is None:
        return y.reshape(b, d * k, h * k, w * k, cout).permute(0, 4, 1, 2, 3)
    out.permute(0, 2, 3, 4, 1).view(b, d, k, h, k, w, k, cout).copy_(y)
    return out


class UpBlock(nn.Module):
    """UNETR decoder step: transposed conv ×``scale``, concatenate the skip, residual conv block.

    ``forward(x, skip, skip_block=None)``: ``skip_block``, if given, refines ``skip`` first (HyMamba's
    decoder); under :func:`reuse_buffers` both halves are written straight into one concatenation
    buffer instead of being concatenated.
    """

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

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor, skip_block: ResidualConvBlock | None = None
    ) -> torch.Tensor:
        weight, bias = self.upsample.weight, self.upsample.bias
        if not reuse_buffers(x):
            up = upsample_transposed(x, weight, bias)
            skip = skip if skip_block is None else skip_block(skip)
            # Both halves channels-last, so the concatenation (and every conv after it) stays so.
            return self.block(torch.cat((up, channels_last(skip)), dim=1))
        cout = weight.shape[1]
        shape = (x.shape[0], self.block.conv1.in_channels, *skip.shape[2:])
        merged = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last_3d)
        upsample_transposed(x, weight, bias, out=merged[:, :cout])
        if skip_block is None:
            merged[:, cout:].copy_(skip)
        else:
            skip_block(skip, out=merged[:, cout:])
        return self.block(merged)


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
