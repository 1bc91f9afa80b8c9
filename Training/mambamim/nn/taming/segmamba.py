"""SegMamba (Taming Mambas variant): a one-directional voxel-level Mamba layer after every encoder stage.

Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3, as
their ``SegMamba`` (github.com/LucaLumetti/TamingMambas, commit 0f1881a): nnU-Net's residual encoder U-Net
with, after the residual blocks of each encoder stage (full resolution included), an outer LayerNorm and a
Mamba scan over every voxel (``d_state = min(C, 256)``); its output continues down the encoder and feeds the
skip connection.

Example::

    model = SegMamba(in_channels=1, out_channels=14)
    logits = model(torch.zeros(1, 1, 64, 64, 64))  # (1, 14, 64, 64, 64)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mambamim.nn.taming.grid_mamba import GridMamba
from mambamim.nn.taming.network import TamingUNet


def per_stage_d_state(cap: int, d_state: int | None):
    """``width -> d_state``: the authors' ``min(width, cap)``, or one fixed ``d_state`` when given."""
    return (lambda width: min(width, cap)) if d_state is None else (lambda width: d_state)


class SegMamba(TamingUNet):
    """Residual U-Net + one forward Mamba scan per encoder stage.

    Args:
        in_channels: image channels.
        out_channels: classes.
        channels: encoder stage widths, full resolution first.
        strides: downsampling into each stage after the first; inputs must be multiples of their product.
        blocks_per_stage: residual blocks per encoder stage.
        decoder_blocks: residual blocks per decoder stage (``None``: 2 each).
        kernel_size: conv kernel size.
        deep_supervision: train mode returns ``[full-res logits, 1/2, 1/4, ...]``; eval mode a tensor.
        scan_order: token order within the stage grid (``mambamim.nn.scan_orders.SCAN_ORDERS``; the
            authors': raster).
        seed: seed of the "shuffle" scan order.
        d_state: ``None`` = the authors' ``min(C, 256)`` per stage; an int fixes it for every stage.
        d_conv, expand: Mamba hyper-parameters.
    """

    bidirectional = False  # BiSegMamba: True
    mamba_in_skips = False  # SegMambaSkip: True
    d_state_cap = 256

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 14,
        channels: Sequence[int] = (32, 64, 128, 256, 320),
        strides: Sequence[int] = (2, 2, 2, 2),
        blocks_per_stage: Sequence[int] = (2, 2, 2, 2, 2),
        decoder_blocks: Sequence[int] | None = None,
        kernel_size: int = 3,
        deep_supervision: bool = False,
        scan_order: str = "raster",
        seed: int = 0,
        d_state: int | None = None,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        states = per_stage_d_state(self.d_state_cap, d_state)

        def layer(width: int) -> nn.Module:
            return GridMamba(width, states(width), bidirectional=self.bidirectional, scan_order=scan_order,
                             seed=seed, d_conv=d_conv, expand=expand)  # fmt: skip

        super().__init__(
            in_channels, out_channels, channels, strides, blocks_per_stage, decoder_blocks, kernel_size,
            deep_supervision, layer, self.mamba_in_skips,
        )  # fmt: skip
