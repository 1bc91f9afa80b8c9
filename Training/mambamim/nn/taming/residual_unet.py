"""Residual U-Net shared by the Taming-Mambas variants (nnU-Net "ResEnc" style).

Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3, build
every variant on nnU-Net's residual encoder U-Net: a conv stem, encoder stages of residual blocks
(conv → InstanceNorm → LeakyReLU → conv → InstanceNorm, add shortcut, LeakyReLU) whose first block
downsamples with a strided conv, a decoder of transposed convs + skip concatenation + a residual block per
stage (nnU-Net's default of one) and optional deep supervision. The variants differ only in where the Mamba
layers sit, which this class takes as ``mamba_layer`` (a factory called with each stage's width) and
``mamba_in_skips``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from mambamim.nn.blocks import ResidualConvBlock, UpBlock, channels_last, check_input, make_norm


def _positive_ints(name: str, values: Sequence[int], length: int) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != length or any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be {length} positive integers, got {values!r}")
    return values


class ResidualUNet(nn.Module):
    """Residual encoder U-Net with a Mamba layer per encoder stage, on the main path or in the skip.

    Args:
        in_channels: image channels.
        out_channels: classes (logit channels).
        channels: width of each encoder stage, full resolution first.
        strides: downsampling factor into each stage after the first (``len(channels) - 1`` values); every
            input size must be a multiple of their product (``size_multiple``).
        blocks_per_stage: residual blocks per encoder stage.
        kernel_size: conv kernel size (odd).
        deep_supervision: in train mode return logits of every decoder stage (full resolution first);
            eval mode always returns only the full-resolution tensor. The lower-resolution heads exist only
            when this is on, so every parameter takes part in the training forward.
        mamba_layer: ``factory(width) -> module`` mapping (B, C, D, H, W) to the same shape, called per stage.
        mamba_in_skips: False: the layer's output continues down the encoder and feeds the skip. True: the
            encoder continues with the un-mixed features and only the skip (and the bottleneck handed to the
            decoder) is mixed.
    """

    size_multiple: int = 16

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        blocks_per_stage: Sequence[int],
        kernel_size: int,
        deep_supervision: bool,
        mamba_layer: Callable[[int], nn.Module],
        mamba_in_skips: bool,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if len(tuple(channels)) < 2:
            raise ValueError(f"channels needs at least 2 stages, got {tuple(channels)!r}")
        channels = _positive_ints("channels", channels, len(tuple(channels)))
        strides = _positive_ints("strides", strides, len(channels) - 1)
        blocks_per_stage = _positive_ints("blocks_per_stage", blocks_per_stage, len(channels))
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.deep_supervision = deep_supervision
        self.mamba_in_skips = mamba_in_skips
        # shadows the class attribute (the defaults' multiple) when custom strides change it
        self.size_multiple = math.prod(strides)

        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, channels[0], kernel_size, padding=kernel_size // 2, bias=False),
            make_norm("instance", channels[0]),
            nn.LeakyReLU(0.01, inplace=True),
        )
        self.encoder = nn.ModuleList()
        for i, (width, blocks) in enumerate(zip(channels, blocks_per_stage)):
            previous, stride = (channels[i - 1], strides[i - 1]) if i else (width, 1)
            self.encoder.append(nn.Sequential(
                ResidualConvBlock(previous, width, kernel_size, stride),
                *(ResidualConvBlock(width, width, kernel_size) for _ in range(blocks - 1)),
            ))
        self.mamba_layers = nn.ModuleList(mamba_layer(width) for width in channels)
        # decoder stage j lifts encoder level n-1-j to level n-2-j
        levels = range(len(channels) - 2, -1, -1)
        self.decoder = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], channels[i], kernel_size, strides[i]) for i in levels
        )
        head_levels = range(len(channels) - 1) if deep_supervision else range(1)
        self.heads = nn.ModuleList(nn.Conv3d(channels[i], out_channels, 1) for i in head_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input(x, self.in_channels, self.size_multiple, type(self).__name__)
        skips = []
        features = self.stem(channels_last(x))
        for stage, mamba in zip(self.encoder, self.mamba_layers):
            features = stage(features)
            if self.mamba_in_skips:
                skips.append(mamba(features))
            else:
                features = mamba(features)
                skips.append(features)

        features = skips.pop()
        decoded = []
        for up in self.decoder:
            features = up(features, skips.pop())
            decoded.append(features)
        decoded.reverse()  # full resolution first

        if self.deep_supervision and self.training:
            return [head(f) for head, f in zip(self.heads, decoded)]
        return self.heads[0](decoded[0])
