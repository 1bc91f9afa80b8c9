"""MONAI baselines under the segmentation-model convention of :mod:`mambamim.nn.registry`.

UNETR (Hatamizadeh et al., WACV 2022) and Swin UNETR (Hatamizadeh et al., BrainLes 2021), the two
transformer baselines of the MambaMIM paper's tables. Both subclass the MONAI network, so their state
dicts are MONAI's and MONAI checkpoints load unchanged; only argument order and input checks differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNETR, SwinUNETR

from mambamim.nn.blocks import check_input


def _three_sizes(img_size: int | Sequence[int], multiple: int, model: str) -> tuple[int, int, int]:
    sizes = (img_size,) * 3 if isinstance(img_size, int) else tuple(img_size)
    if len(sizes) != 3 or any(s < multiple or s % multiple for s in sizes):
        raise ValueError(f"{model}: img_size must be 3 positive multiples of {multiple}, got {img_size}")
    return sizes


class UNETRBaseline(UNETR):
    """MONAI UNETR (ViT-B/16 encoder: 12 layers, width 768, 12 heads). Its position embedding is
    learned for ``img_size``, so inputs must have exactly that spatial size (sliding-window ROI).

    Example::

        net = UNETRBaseline(in_channels=1, out_channels=14, img_size=96)
        logits = net(torch.randn(1, 1, 96, 96, 96))  # (1, 14, 96, 96, 96)
    """

    size_multiple: int = 16

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 14,
        img_size: int | Sequence[int] = 96,
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        norm_name: str = "instance",
        dropout_rate: float = 0.0,
    ) -> None:
        sizes = _three_sizes(img_size, self.size_multiple, type(self).__name__)
        super().__init__(
            in_channels,
            out_channels,
            sizes,
            feature_size=feature_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_heads=num_heads,
            norm_name=norm_name,
            dropout_rate=dropout_rate,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.img_size = sizes

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        check_input(x_in, self.in_channels, self.size_multiple, type(self).__name__)
        if tuple(x_in.shape[2:]) != self.img_size:
            raise ValueError(
                f"UNETRBaseline: input size {tuple(x_in.shape[2:])} must equal img_size={self.img_size} "
                "(UNETR learns its position embedding for one window size)"
            )
        return super().forward(x_in)


class SwinUNETRBaseline(SwinUNETR):
    """MONAI Swin UNETR (patch 2, window 7, depths 2-2-2-2, feature size 48 as in the paper's tables).

    ``img_size`` is the training window and is only checked (a multiple of 32); any input whose
    sizes are multiples of 32 runs, since Swin attention pads to whole windows.

    Example::

        net = SwinUNETRBaseline(in_channels=1, out_channels=14)
        logits = net(torch.randn(1, 1, 96, 96, 96))  # (1, 14, 96, 96, 96)
    """

    size_multiple: int = 32

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 14,
        img_size: int | Sequence[int] = 96,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        norm_name: str = "instance",
        use_v2: bool = False,
    ) -> None:
        self_name = type(self).__name__
        sizes = _three_sizes(img_size, self.size_multiple, self_name)
        super().__init__(
            in_channels,
            out_channels,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            feature_size=feature_size,
            norm_name=norm_name,
            use_v2=use_v2,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.img_size = sizes

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        check_input(x_in, self.in_channels, self.size_multiple, type(self).__name__)
        return super().forward(x_in)
