"""SegMamba (Taming-Mambas variant): a one-directional voxel-level Mamba layer after every encoder stage.

Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3: the
nnU-Net residual encoder U-Net with, after the residual blocks of each encoder stage (full resolution
included), a Mamba layer scanning every voxel of the stage's feature map; its output continues down the
encoder and feeds the skip connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from mambamim.nn.taming.grid_mamba import GridMamba
from mambamim.nn.taming.residual_unet import ResidualUNet


class SegMamba(ResidualUNet):
    """Residual U-Net + one forward Mamba scan per encoder stage.

    Args:
        in_channels: image channels.
        out_channels: classes.
        channels: encoder stage widths, full resolution first.
        strides: downsampling into each stage after the first; inputs must be multiples of their product.
        blocks_per_stage: residual blocks per encoder stage.
        kernel_size: conv kernel size.
        deep_supervision: train mode returns ``[full-res logits, 1/2, 1/4, ...]``; eval mode a tensor.
        scan_order: token order within the stage grid (``mambamim.nn.scan_orders.SCAN_ORDERS``).
        seed: seed of the "shuffle" scan order.
        d_state, d_conv, expand: Mamba hyper-parameters.
    """

    size_multiple = 16
    bidirectional = False  # BiSegMamba: True

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 14,
        channels: Sequence[int] = (32, 64, 128, 256, 320),
        strides: Sequence[int] = (2, 2, 2, 2),
        blocks_per_stage: Sequence[int] = (1, 3, 4, 6, 6),
        kernel_size: int = 3,
        deep_supervision: bool = False,
        scan_order: str = "raster",
        seed: int = 0,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        super().__init__(
            in_channels, out_channels, channels, strides, blocks_per_stage, kernel_size, deep_supervision,
            mamba_layer=partial(GridMamba, bidirectional=self.bidirectional, scan_order=scan_order, seed=seed,
                                d_state=d_state, d_conv=d_conv, expand=expand),
            mamba_in_skips=False,
        )
