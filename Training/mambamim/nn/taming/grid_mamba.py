"""Voxel-level Mamba layer: flatten a feature map to one token per voxel, scan, restore the grid.

Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3: no
patching, every voxel of the stage's feature map is a token. Laid out as the authors' code
(github.com/LucaLumetti/TamingMambas, commit 0f1881a, ``tamingmambas/nnunetv2/nets/*.py``), with their
parameter names, so their checkpoints load:

- one scan direction (their ``MambaTrans``): ``x + Mamba(norm1(x))`` then ``x + head(norm2(x))`` (a single
  linear projection, not an MLP), ``d_state = min(C, 256)`` (``min(C, 64)`` in MultiSegMamba);
- a bidirectional scan (their ``PanMambaTrans``): ``fwd_mamba`` on the sequence, ``bwd_mamba`` on the
  reversed sequence flipped back, ``norm(fwd + bwd)``;
- several axis orders (their ``MultiMambaTrans``, attribute ``mambas``) are averaged;
- an outer LayerNorm on the tokens before the scan (their ``MambaLayer.norm``), in every variant except
  MultiSegMamba, whose layer is the multi-order scan itself.

Tokens are ordered by an axis order of the (D, H, W) grid composed with a scan order of
``mambamim.nn.scan_orders`` (raster, zigzag, hilbert, shuffle) computed on the permuted grid; "raster" with
axis order (0, 1, 2) is the authors' ``x.reshape(B, C, N)``. Other scan orders are our option.
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
    """One scan direction over tokens (B, L, C) (their ``MambaTrans``):
    ``x + mamba(norm1(x))``, then ``x + head(norm2(x))``."""

    def __init__(self, dim: int, d_state: int, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.mamba = Mamba(dim, d_state=d_state, d_conv=d_conv, expand=expand)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mamba(self.norm1(x)) + x
        return self.head(self.norm2(x)) + x


class BiScan(nn.Module):
    """Forward + reversed scan combined as ``norm(fwd + bwd)`` (their ``PanMambaTrans``)."""

    def __init__(self, dim: int, d_state: int, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.fwd_mamba = ScanDirection(dim, d_state, d_conv, expand)
        self.bwd_mamba = ScanDirection(dim, d_state, d_conv, expand)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fwd_mamba(x) + self.bwd_mamba(x.flip(1)).flip(1))


OrderCache = dict[tuple[tuple[int, ...], torch.device], list[tuple[torch.Tensor, torch.Tensor]]]


class GridMamba(nn.Module):
    """Mamba over every voxel of a (B, C, D, H, W) map; returns the same shape.

    Args:
        dim: channels C.
        axis_orders: ``None``: one scan in (D, H, W) order, held as ``mamba`` (SegMamba, BiSegMamba,
            SegMambaSkip). A sequence of distinct permutations of (0, 1, 2) naming which of (D, H, W) is
            scanned slowest to fastest: one scan each, held in ``mambas``, outputs averaged (MultiSegMamba).
        bidirectional: each scan is a :class:`BiScan` instead of a :class:`ScanDirection`.
        outer_norm: a LayerNorm (``norm``) on the tokens before the scan.
        scan_order: name from ``mambamim.nn.scan_orders.SCAN_ORDERS`` applied on each axis-permuted grid.
        seed: seed of the "shuffle" scan order.
        d_state, d_conv, expand: Mamba hyper-parameters (mamba-ssm names).
    """

    def __init__(
        self,
        dim: int,
        d_state: int,
        axis_orders: Sequence[Sequence[int]] | None = None,
        bidirectional: bool = False,
        outer_norm: bool = True,
        scan_order: str = "raster",
        seed: int = 0,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        super().__init__()
        orders = ((0, 1, 2),) if axis_orders is None else tuple(tuple(order) for order in axis_orders)
        if not orders or any(order not in AXIS_ORDERS for order in orders) or len(set(orders)) != len(orders):
            raise ValueError(f"axis_orders must be distinct permutations of (0, 1, 2), got {axis_orders!r}")
        if scan_order not in SCAN_ORDERS:
            raise ValueError(f"unknown scan_order {scan_order!r}; valid names: {', '.join(SCAN_ORDERS)}")
        self.axis_orders = orders
        self.scan_order = scan_order
        self.seed = seed
        if outer_norm:
            self.norm = nn.LayerNorm(dim)
        scan_cls = BiScan if bidirectional else ScanDirection
        if axis_orders is None:
            self.mamba = scan_cls(dim, d_state, d_conv, expand)
        else:
            self.mambas = nn.ModuleList(scan_cls(dim, d_state, d_conv, expand) for _ in orders)
        # token orders depend on the grid, known only at forward time; kept out of the state dict
        self._order_cache: OrderCache = {}

    @property
    def scans(self) -> list[nn.Module]:
        return list(self.mambas) if hasattr(self, "mambas") else [self.mamba]

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
        if hasattr(self, "norm"):
            tokens = self.norm(tokens)
        out = None
        scans = self.scans
        for scan, (perm, inverse) in zip(scans, self.token_orders(tuple(grid), x.device)):
            y = scan(tokens[:, perm])[:, inverse]
            out = y if out is None else out + y
        if len(scans) > 1:
            out = out / len(scans)
        return out.reshape(batch, *grid, channels).permute(0, 4, 1, 2, 3)
