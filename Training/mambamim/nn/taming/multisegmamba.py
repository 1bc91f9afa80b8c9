"""MultiSegMamba (Taming Mambas variant): bidirectional scans along 4 of the 6 axis orders, averaged.

Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3:
flattening a volume makes neighbours along the fastest axis adjacent in the sequence but puts neighbours
along the slowest axis a whole slice apart; scanning along several axis orders gives each axis a turn as
the fast one. Each order gets its own bidirectional scan (BiSegMamba's) and the orders' outputs are
averaged. As in the authors' ``MultiSegMamba``: orders (0, 1, 2), (0, 2, 1), (1, 0, 2), (2, 0, 1) of the
spatial axes (our default ``axis_orders`` over (D, H, W)), ``d_state = min(C, 64)``, and no outer LayerNorm.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mambamim.nn.taming.grid_mamba import GridMamba
from mambamim.nn.taming.network import TamingUNet
from mambamim.nn.taming.segmamba import per_stage_d_state

DEFAULT_AXIS_ORDERS: tuple[tuple[int, int, int], ...] = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (2, 0, 1))


class MultiSegMamba(TamingUNet):
    """Residual U-Net + bidirectional Mamba scans along several axis orders per encoder stage.

    Args:
        axis_orders: distinct permutations of (0, 1, 2) over (D, H, W), slowest axis first.
        d_state: ``None`` = the authors' ``min(C, 64)`` per stage; an int fixes it for every stage.
        Remaining arguments: as :class:`~mambamim.nn.taming.segmamba.SegMamba`.

    Example::

        net = MultiSegMamba(in_channels=1, out_channels=14)
        logits = net(torch.randn(1, 1, 64, 64, 64))  # (1, 14, 64, 64, 64)
    """

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
        axis_orders: Sequence[Sequence[int]] = DEFAULT_AXIS_ORDERS,
        scan_order: str = "raster",
        seed: int = 0,
        d_state: int | None = None,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        states = per_stage_d_state(64, d_state)

        def layer(width: int) -> nn.Module:
            return GridMamba(width, states(width), axis_orders=axis_orders, bidirectional=True,
                             outer_norm=False, scan_order=scan_order, seed=seed, d_conv=d_conv,
                             expand=expand)  # fmt: skip

        super().__init__(
            in_channels, out_channels, channels, strides, blocks_per_stage, decoder_blocks, kernel_size,
            deep_supervision, layer, False,
        )  # fmt: skip
