"""Vanilla Mamba: UNETR (Hatamizadeh et al., WACV 2022) with its ViT replaced by a Vision-Mamba encoder.

The plain-Mamba baseline of MambaMIM (Tang et al., arXiv 2408.08070, §4): non-overlapping 16³ patches
embedded to ``hidden_size`` channels, a fixed 3-D sin-cos position embedding, ``depth`` pre-norm Mamba
layers (:class:`~mambamim.nn.vision_mamba.VisionMambaStage`), and MONAI's UNETR decoder fed, as MONAI's
``UNETR`` does (``hidden_states_out[3]``, ``[6]``, ``[9]``), with the outputs of layers depth/4 + 1,
depth/2 + 1, 3·depth/4 + 1 (counting from 1: 4, 7 and 10 of 12) and the final (normalised) output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from torch import nn

from mambamim.nn.blocks import check_input
from mambamim.nn.vision_mamba import VisionMambaStage

_UNETR_PATCH = 16  # the UNETR decoder reaches full resolution in four ×2 steps


class VanillaMamba(nn.Module):
    """UNETR-shaped segmentation network with a Mamba encoder.

    Args:
        in_channels: input image channels.
        out_channels: number of classes.
        img_size: training window (int or 3 ints); must be a multiple of ``patch_size``. Inputs of
            any size that is a multiple of ``patch_size`` are accepted, because the position
            embedding is computed per grid.
        patch_size: patch edge; the UNETR decoder needs 16.
        hidden_size: token width.
        depth: number of Mamba layers (a multiple of 4: skips come from every quarter).
        feature_size: UNETR decoder base width.
        d_state, d_conv, expand: Mamba hyper-parameters.
        mlp_ratio: MLP width of the Mamba layers.
        scan_order, seed: token order (see :mod:`mambamim.nn.scan_orders`).
        bidirectional: BiMamba layers.
        norm_name: decoder normalisation (MONAI name).

    Example::

        net = VanillaMamba(in_channels=1, out_channels=14, img_size=96)
        logits = net(torch.randn(1, 1, 96, 96, 96))  # (1, 14, 96, 96, 96); the input must be img_size
    """

    size_multiple: int = _UNETR_PATCH

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 14,
        img_size: int | Sequence[int] = 96,
        patch_size: int = 16,
        hidden_size: int = 768,
        depth: int = 12,
        feature_size: int = 16,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        mlp_ratio: float = 4.0,
        scan_order: str = "raster",
        seed: int = 0,
        bidirectional: bool = False,
        norm_name: str = "instance",
    ) -> None:
        super().__init__()
        if patch_size != _UNETR_PATCH:
            raise ValueError(f"patch_size must be {_UNETR_PATCH} (UNETR decoder), got {patch_size}")
        sizes = (img_size,) * 3 if isinstance(img_size, int) else tuple(img_size)
        if len(sizes) != 3 or any(s % patch_size for s in sizes):
            raise ValueError(
                f"img_size must be 3 sizes, each a multiple of patch_size={patch_size}, got {img_size}"
            )
        if depth < 4 or depth % 4:
            raise ValueError(
                f"depth must be a positive multiple of 4 (skips from every quarter), got {depth}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.img_size = sizes
        # MONAI UNETR's hidden_states_out[3], [6], [9] for 12 blocks, i.e. blocks 4, 7, 10 counted from 1
        self.skip_layers = (depth // 4 + 1, depth // 2 + 1, 3 * depth // 4 + 1)
        self.patch_embed = nn.Conv3d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.mamba = VisionMambaStage(
            hidden_size, depth, d_state, d_conv, expand, scan_order, seed, bidirectional, mlp_ratio
        )
        fs = feature_size

        def pr_up(out: int, n: int) -> UnetrPrUpBlock:
            return UnetrPrUpBlock(3, hidden_size, out, n, 3, 1, 2, norm_name, conv_block=True, res_block=True)

        def up(inp: int, out: int) -> UnetrUpBlock:
            return UnetrUpBlock(3, inp, out, 3, 2, norm_name, res_block=True)

        self.encoder1 = UnetrBasicBlock(3, in_channels, fs, 3, 1, norm_name, res_block=True)
        self.encoder2 = pr_up(fs * 2, 2)
        self.encoder3 = pr_up(fs * 4, 1)
        self.encoder4 = pr_up(fs * 8, 0)
        self.decoder5 = up(hidden_size, fs * 8)
        self.decoder4 = up(fs * 8, fs * 4)
        self.decoder3 = up(fs * 4, fs * 2)
        self.decoder2 = up(fs * 2, fs)
        self.out = UnetOutBlock(3, fs, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.size_multiple, type(self).__name__)
        tokens = self.patch_embed(x)
        last, (h1, h2, h3) = self.mamba(tokens, return_layers=self.skip_layers)
        enc1 = self.encoder1(x)
        dec3 = self.decoder5(last, self.encoder4(h3))
        dec2 = self.decoder4(dec3, self.encoder3(h2))
        dec1 = self.decoder3(dec2, self.encoder2(h1))
        return self.out(self.decoder2(dec1, enc1))
