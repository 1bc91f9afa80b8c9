"""MultiSegMamba (Taming-Mambas variant): bidirectional scans along 4 of the 6 axis orders, averaged.

Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3:
flattening a volume makes neighbours along the fastest axis adjacent in the sequence but puts neighbours
along the slowest axis a whole slice apart; scanning along several axis orders gives each axis a turn as
the fast one. Each order gets its own bidirectional scan (BiSegMamba's layer) and the orders' outputs
are averaged.

The paper uses 4 of the 3! = 6 orders to bound the cost; its code takes orders (0, 1, 2), (0, 2, 1),
(1, 0, 2), (2, 0, 1) of the spatial axes, which are our default ``axis_orders`` over (D, H, W). Which four
the paper leaves open, so the argument accepts any distinct permutations of (0, 1, 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from mambamim.nn.taming.grid_mamba import GridMamba
from mambamim.nn.taming.residual_unet import ResidualUNet

DEFAULT_AXIS_ORDERS: tuple[tuple[int, int, int], ...] = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (2, 0, 1))


class MultiSegMamba(ResidualUNet):
    """Residual U-Net + bidirectional Mamba scans along several axis orders per encoder stage.

    Args:
        in_channels: image channels.
        out_channels: classes.
        channels: encoder stage widths, full resolution first.
        strides: downsampling into each stage after the first; inputs must be multiples of their product.
        blocks_per_stage: residual blocks per encoder stage.
        kernel_size: conv kernel size.
        deep_supervision: train mode returns ``[full-res logits, 1/2, 1/4, ...]``; eval mode a tensor.
        axis_orders: distinct permutations of (0, 1, 2) over (D, H, W), slowest axis first.
        scan_order: token order applied within each axis-permuted grid (``mambamim.nn.scan_orders``).
        seed: seed of the "shuffle" scan order.
        d_state, d_conv, expand: Mamba hyper-parameters.
    """

    size_multiple = 16

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 14,
        channels: Sequence[int] = (32, 64, 128, 256, 320),
        strides: Sequence[int] = (2, 2, 2, 2),
        blocks_per_stage: Sequence[int] = (1, 3, 4, 6, 6),
        kernel_size: int = 3,
        deep_supervision: bool = False,
        axis_orders: Sequence[Sequence[int]] = DEFAULT_AXIS_ORDERS,
        scan_order: str = "raster",
        seed: int = 0,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        super().__init__(
            in_channels, out_channels, channels, strides, blocks_per_stage, kernel_size, deep_supervision,
            mamba_layer=partial(GridMamba, axis_orders=axis_orders, bidirectional=True, scan_order=scan_order,
                                seed=seed, d_state=d_state, d_conv=d_conv, expand=expand),
            mamba_in_skips=False,
        )
