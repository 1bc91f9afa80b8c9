"""Hierarchical reconstruction decoder of MambaMIM (arXiv 2408.08070, §3.3, Fig. 3).

Starting from the densified Mamba-stage map (TOKI or a mask token already filled the masked tokens),
the decoder upsamples scale by scale. At every CNN scale the sparse encoder feature is densified: masked
positions are filled with a learnable per-scale mask token, the map is projected to the decoder width
and fused with the upsampled coarser features by a two-convolution skip block. A final 1×1×1
convolution maps to the image channels.

Layers (BatchNorm + ReLU, as the reference light decoder; wrap with ``SyncBatchNorm`` under DDP if
wanted): ``up[i]``: transposed conv ×2 then two 3³ convs, from scale i+1 to scale i; ``fuse[i]``: two 3³
convs on [upsampled, projected skip]; ``proj[i]``: 3³ conv (1×1×1 at the Mamba scale, whose tokens are
already dense); ``mask_tokens[i]``: (1, C_i, 1, 1, 1). With ``skip=False`` (Table 9 "w/o skip") no skip
layers exist, so DDP sees no unused parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv_norm_act(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    ]


class TwoConvBlock(nn.Sequential):
    """Two (3³ conv, BatchNorm, ReLU) layers."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            *_conv_norm_act(in_channels, out_channels), *_conv_norm_act(out_channels, out_channels)
        )


class UpBlock(nn.Module):
    """×2 upsampling (transposed conv, kernel 2, stride 2) followed by a :class:`TwoConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = TwoConvBlock(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class MIMDecoder(nn.Module):
    """Decoder from encoder features [f0 … fL] (finest first, fL = dense Mamba map) to the image.

    Args:
        encoder_channels: channels of the encoder outputs, finest first (``HyMambaEncoder.feature_channels``,
            by default (64, 128, 192, 384, 384): level i's skip at 1/2^i, then the Mamba map).
        decoder_channels: decoder width at each level, finest first, same length.
        out_channels: image channels to reconstruct.
        skip: fuse the densified CNN features of each scale (False = Table 9 "w/o skip").
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        out_channels: int = 1,
        skip: bool = True,
    ) -> None:
        super().__init__()
        encoder_channels, decoder_channels = tuple(encoder_channels), tuple(decoder_channels)
        if len(encoder_channels) < 2 or len(decoder_channels) != len(encoder_channels):
            raise ValueError(
                f"decoder_channels {decoder_channels} must give one width per encoder level "
                f"(encoder channels {encoder_channels})"
            )
        if min(decoder_channels) < 1:
            raise ValueError(f"decoder_channels must be positive, got {decoder_channels}")
        self.skip = skip
        levels = len(encoder_channels)
        self.bottom_proj = nn.Conv3d(encoder_channels[-1], decoder_channels[-1], kernel_size=1)
        self.up = nn.ModuleList(
            UpBlock(decoder_channels[i + 1], decoder_channels[i]) for i in range(levels - 1)
        )
        if skip:
            self.mask_tokens = nn.ParameterList(
                nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, c, 1, 1, 1), std=0.02, a=-0.02, b=0.02))
                for c in encoder_channels[:-1]
            )
            self.proj = nn.ModuleList(
                nn.Conv3d(encoder_channels[i], decoder_channels[i], kernel_size=3, padding=1)
                for i in range(levels - 1)
            )
            self.fuse = nn.ModuleList(
                TwoConvBlock(2 * decoder_channels[i], decoder_channels[i]) for i in range(levels - 1)
            )
        self.head = nn.Conv3d(decoder_channels[0], out_channels, kernel_size=1)

    def densify(self, level: int, feature: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Fill the masked positions of CNN level ``level`` with its mask token. ``masked``: (B, 1, *size)."""
        return torch.where(masked, self.mask_tokens[level].to(feature.dtype), feature)

    def forward(self, features: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: [f0 … fL] finest first; ``masks``: bool (B, 1, *size_i) per level, True = masked."""
        x = self.bottom_proj(features[-1])
        for level in reversed(range(len(self.up))):
            x = self.up[level](x)
            if self.skip:
                dense = self.densify(level, features[level], masks[level])
                x = self.fuse[level](torch.cat((x, self.proj[level](dense)), dim=1))
        return self.head(x)
