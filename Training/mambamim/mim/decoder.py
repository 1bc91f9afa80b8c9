"""Hierarchical reconstruction decoder of MambaMIM (arXiv 2408.08070, §3.3, Fig. 3).

Starting from the densified Mamba-stage map (TOKI or a mask token already filled the masked tokens),
the decoder upsamples scale by scale. At every CNN scale the sparse encoder feature is densified: masked
positions are filled with a learnable per-scale mask token, the map is projected to the decoder width
and fused with the upsampled coarser features by a two-convolution skip block. A final 1×1×1
convolution maps to the image channels.

Layers, those of the authors' ``LightDecoder`` and densify layers (``models/decoder.py`` and
``models/MambaMIM.py`` of github.com/FengheTan9/MambaMIM; BatchNorm + ReLU; wrap with ``SyncBatchNorm``
under DDP if wanted): ``up[i]`` (their ``dense_decoder.dec``): transposed conv ×2 keeping the width, then
two 3³ convs to the width of scale i, from scale i+1 to scale i; ``fuse[i]`` (their ``dense_decoder.fuse``):
two 3³ convs on [upsampled, projected skip]; ``proj[i]`` (their ``densify_projs``): 3³ conv;
``bottom_proj``: 1³ conv at the Mamba scale, whose tokens are already dense; ``mask_tokens[i]``:
(1, C_i, 1, 1, 1); ``head`` (their ``dense_decoder.proj``): the linear layer τ to the voxels.

Algorithm 2 fuses every skip S_{n-1} .. S_1; the authors' loop stops one scale early and never fuses the
finest one (its projection and fusion weights exist there but are unused). We follow Algorithm 2. With
``skip=False`` (Table 9 "w/o skip") no skip layers exist, so DDP sees no unused parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mambamim.errors import InvalidInput


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
    """×2 upsampling (transposed conv, kernel 2, stride 2, same width) followed by a
    :class:`TwoConvBlock` to ``out_channels`` (the authors' ``UNetBlock``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, in_channels, kernel_size=2, stride=2)
        self.conv = TwoConvBlock(in_channels, out_channels)

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
            raise InvalidInput(
                f"decoder_channels {decoder_channels} must give one width per encoder level "
                f"(encoder channels {encoder_channels})"
            )
        if min(decoder_channels) < 1:
            raise InvalidInput(f"decoder_channels must be positive, got {decoder_channels}")
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
