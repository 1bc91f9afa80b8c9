"""Voxel-level Mamba layer: flatten a feature map to one token per voxel, scan, restore the grid.

Follows Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3:
no patching, every voxel of the stage's feature map is a token. Details the paper leaves to its reference
code, reproduced here:

- one scan direction is two pre-norm residual sub-layers, ``x + Mamba(LN(x))`` then ``x + Linear(LN(x))``
  (a single linear projection, not a 4× MLP);
- a bidirectional scan runs a second, independently parameterised direction on the reversed sequence,
  flips its output back, sums both and applies a LayerNorm;
- several axis orders (MultiSegMamba) are averaged.

The authors' code sizes the state per layer (``d_state = min(C, 64)``, ``min(C, 256)`` in the skip variant);
here ``d_state`` is one constructor argument (default 16, mamba-ssm's default) so every size is explicit.

Tokens are ordered by an axis order of the (D, H, W) grid composed with a scan order of
``mambamim.nn.scan_orders`` (raster, zigzag, hilbert, shuffle) computed on the permuted grid, so "raster"
with axis order (0, 1, 2) is ``x.flatten(2)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from mambamim.nn.mamba import Mamba
from mambamim.nn.scan_orders import SCAN_ORDERS, inverse_permutation, scan_permutation

AXIS_ORDERS: tuple[tuple[int, int, int], ...] = tuple(itertools.permutations((0, 1, 2)))


class ScanDirection(nn.Module):
    """One scan direction over tokens (B, L, C): ``x + Mamba(LN(x))``, then ``x + Linear(LN(x))``."""

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = Mamba(dim, d_state=d_state, d_conv=d_conv, expand=expand)
        self.norm2 = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.proj(self.norm2(x))


class AxisScan(nn.Module):
    """The scan along one token order: forward only, or forward + reversed combined as ``LN(fwd + bwd)``."""

    def __init__(
        self, dim: int, bidirectional: bool, d_state: int = 16, d_conv: int = 4, expand: int = 2
    ) -> None:
        super().__init__()
        self.fwd = ScanDirection(dim, d_state, d_conv, expand)
        if bidirectional:
            self.bwd = ScanDirection(dim, d_state, d_conv, expand)
            self.norm = nn.LayerNorm(dim)
        self.bidirectional = bidirectional

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.bidirectional:
            return self.fwd(x)
        return self.norm(self.fwd(x) + self.bwd(x.flip(1)).flip(1))


OrderCache = dict[tuple[tuple[int, ...], torch.device], list[tuple[torch.Tensor, torch.Tensor]]]


class GridMamba(nn.Module):
    """Mamba over every voxel of a (B, C, D, H, W) map along one or more axis orders; returns the same shape.

    Args:
        dim: channels C.
        axis_orders: permutations of (0, 1, 2) naming which of (D, H, W) is scanned slowest to fastest; one
            ``AxisScan`` each, outputs averaged.
        bidirectional: add the reversed scan to each axis order.
        scan_order: name from ``mambamim.nn.scan_orders.SCAN_ORDERS`` applied on each axis-permuted grid.
        seed: seed of the "shuffle" scan order.
        d_state, d_conv, expand: Mamba hyper-parameters (mamba-ssm names).
    """

    def __init__(
        self,
        dim: int,
        axis_orders: Sequence[Sequence[int]] = ((0, 1, 2),),
        bidirectional: bool = False,
        scan_order: str = "raster",
        seed: int = 0,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        super().__init__()
        orders = tuple(tuple(order) for order in axis_orders)
        if not orders or any(order not in AXIS_ORDERS for order in orders) or len(set(orders)) != len(orders):
            raise ValueError(f"axis_orders must be distinct permutations of (0, 1, 2), got {axis_orders!r}")
        if scan_order not in SCAN_ORDERS:
            raise ValueError(f"unknown scan_order {scan_order!r}; valid names: {', '.join(SCAN_ORDERS)}")
        self.axis_orders = orders
        self.scan_order = scan_order
        self.seed = seed
        self.scans = nn.ModuleList(AxisScan(dim, bidirectional, d_state, d_conv, expand) for _ in orders)
        # token orders depend on the grid, known only at forward time; kept out of the state dict
        self._order_cache: OrderCache = {}

    def token_orders(
        self, grid: tuple[int, ...], device: torch.device
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per axis order ``(perm, inverse)``: sequence position i holds raster index perm[i]."""
        key = (tuple(grid), torch.device(device))
        if key not in self._order_cache:
            # built outside inference mode: index tensors made under torch.inference_mode (validation)
            # could not be saved for a later training backward
            with torch.inference_mode(False):
                raster = torch.arange(math.prod(grid)).reshape(grid)
                orders = []
                for axes in self.axis_orders:
                    permuted = raster.permute(axes)
                    order = scan_permutation(self.scan_order, tuple(permuted.shape), self.seed)
                    perm = permuted.flatten()[order]
                    orders.append((perm.to(device), inverse_permutation(perm).to(device)))
            self._order_cache[key] = orders
        return self._order_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *grid = x.shape
        # (B, N, C) in raster order; a view, not a copy, when x is channels-last
        tokens = x.permute(0, 2, 3, 4, 1).reshape(batch, -1, channels)
        out = None
        for scan, (perm, inverse) in zip(self.scans, self.token_orders(tuple(grid), x.device)):
            y = scan(tokens[:, perm])[:, inverse]
            out = y if out is None else out + y
        if len(self.scans) > 1:
            out = out / len(self.scans)
        return out.reshape(batch, *grid, channels).permute(0, 4, 1, 2, 3)
