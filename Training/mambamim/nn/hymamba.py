"""HyMamba: the hybrid CNN-Mamba segmentation network of MambaMIM (Tang et al., arXiv 2408.08070, §3.1).

Encoder: a 3³ stem conv at full resolution, then five MedNeXt-style stages (level ``i`` at 1/2^i with
``channels[i]``), linked by max-pool ×2 followed by a 3³ conv that raises the channels; at the 1/16
grid (6³ tokens for a 96³ input) a Vision-Mamba stage of pre-norm Mamba layers with a fixed 3-D
sin-cos position embedding. Decoder (UNETR style): residual conv blocks refine the four CNN skips, and
four steps of transposed conv ×2, concatenation with the skip and a residual conv block lead to a 1³
head.

The whole CNN runs in channels-last memory order, where 3-D convolutions are fastest on CPU and the
per-voxel LayerNorm and 1³ projections of MedNeXt blocks are plain last-dimension ops on a
(B, D, H, W, C) view, with no permute copies.
"""

from __future__ import annotations

import torch
from torch import nn

from mambamim.nn.blocks import ResidualConvBlock, UpBlock, channels_last, check_input
from mambamim.nn.vision_mamba import VisionMambaStage


class MedNeXtBlock(nn.Module):
    """MedNeXt block (Roy et al. 2023): depthwise k³ conv, per-voxel channel LayerNorm, 1³ expansion
    to ``expansion``·C, GELU, 1³ compression to C, residual.

    Guarantee relied on by MambaMIM's sparse encoder: ``dwconv`` is the only op that mixes voxels and
    the norm is per voxel, so ``mask * block(mask * x)`` never reads a masked voxel's value.
    The 1³ projections are ``nn.Linear`` layers applied on the channels-last (B, D, H, W, C) view.
    """

    def __init__(self, channels: int, expansion: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.dwconv = nn.Conv3d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pw1 = nn.Linear(channels, expansion * channels)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(expansion * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 4, 1)
        y = self.pw2(self.act(self.pw1(self.norm(y))))
        y += x.permute(0, 2, 3, 4, 1)  # in place: a Linear's backward does not need its output
        return y.permute(0, 4, 1, 2, 3)


class Downsample(nn.Module):
    """Max-pool ×2, then a 3³ conv raising the channels (applied in that order)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d(2)
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The CPU conv falls back to a contiguous-output kernel on small maps; keep channels-last.
        return channels_last(self.conv(self.pool(x)))


def _check_levels(channels, blocks, expansion) -> None:
    if not len(channels) == len(blocks) == len(expansion) or len(channels) < 2:
        raise ValueError(
            "channels, blocks and expansion must have the same length (>= 2, one entry per level), got "
            f"channels={tuple(channels)}, blocks={tuple(blocks)}, expansion={tuple(expansion)}"
        )


class HyMambaEncoder(nn.Module):
    """HyMamba encoder; forward(x) returns the feature maps [f0 .. f4] (level i at 1/2^i).

    Args:
        in_channels: input image channels.
        channels: width of each level.
        blocks: MedNeXt blocks per level.
        expansion: MedNeXt expansion ratio per level.
        kernel_size: depthwise kernel of the MedNeXt blocks.
        mamba_depth: Mamba layers at the deepest level.
        d_state, d_conv, expand: Mamba hyper-parameters.
        scan_order, seed: token order of the Mamba stage (see :mod:`mambamim.nn.scan_orders`).
        bidirectional: BiMamba layers instead of forward-only ones.
        mlp_ratio: MLP width of the Mamba layers (2, as in the published MambaMIM code).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 128, 192, 384),
        blocks: tuple[int, ...] = (1, 2, 2, 2, 1),
        expansion: tuple[int, ...] = (2, 2, 4, 4, 4),
        kernel_size: int = 3,
        mamba_depth: int = 4,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        scan_order: str = "raster",
        seed: int = 0,
        bidirectional: bool = False,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        _check_levels(channels, blocks, expansion)
        self.in_channels = in_channels
        self.channels = tuple(channels)
        self.size_multiple = 2 ** (len(channels) - 1)
        self.stem = nn.Conv3d(in_channels, channels[0], 3, padding=1)
        self.stages = nn.ModuleList(
            nn.ModuleList(MedNeXtBlock(c, r, kernel_size) for _ in range(n))
            for c, n, r in zip(channels, blocks, expansion)
        )
        self.downsamples = nn.ModuleList(
            Downsample(channels[i], channels[i + 1]) for i in range(len(channels) - 1)
        )
        self.mamba = VisionMambaStage(
            channels[-1], mamba_depth, d_state, d_conv, expand, scan_order, seed, bidirectional, mlp_ratio
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(x, self.in_channels, self.size_multiple, type(self).__name__)
        f = channels_last(self.stem(x))
        features = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                f = self.downsamples[i - 1](f)
            for block in stage:
                f = block(f)
            features.append(f)
        features[-1] = self.mamba(features[-1])
        return features


class HyMamba(nn.Module):
    """HyMamba segmentation network (MambaMIM §3.1): :class:`HyMambaEncoder` + UNETR-style decoder.

    Args:
        in_channels: input image channels.
        out_channels: number of classes (logit channels).
        norm: normalisation of the decoder's residual blocks (``instance``, ``layer`` or ``batch``).
        Remaining arguments: see :class:`HyMambaEncoder`.

    forward(x (B, in_channels, D, H, W)) -> logits (B, out_channels, D, H, W); D, H, W multiples of 16.
    """

    size_multiple: int = 16

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 14,
        channels: tuple[int, ...] = (32, 64, 128, 192, 384),
        blocks: tuple[int, ...] = (1, 2, 2, 2, 1),
        expansion: tuple[int, ...] = (2, 2, 4, 4, 4),
        kernel_size: int = 3,
        mamba_depth: int = 4,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        scan_order: str = "raster",
        seed: int = 0,
        bidirectional: bool = False,
        mlp_ratio: float = 2.0,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self.encoder = HyMambaEncoder(
            in_channels, channels, blocks, expansion, kernel_size, mamba_depth,
            d_state, d_conv, expand, scan_order, seed, bidirectional, mlp_ratio,
        )  # fmt: skip
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.size_multiple = self.encoder.size_multiple
        levels = len(channels) - 1
        self.skip_blocks = nn.ModuleList(
            ResidualConvBlock(channels[i], channels[i], norm=norm) for i in range(levels)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], channels[i], norm=norm) for i in range(levels)
        )
        self.head = nn.Conv3d(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.size_multiple, type(self).__name__)
        *skips, y = self.encoder(x)
        for i in reversed(range(len(skips))):
            y = self.up_blocks[i](y, self.skip_blocks[i](skips[i]))
        return self.head(y).contiguous()
