"""Vision-Mamba stage: a stack of pre-norm Mamba layers over the tokens of a 3-D feature map.

Used as the bottleneck of HyMamba (MambaMIM, arXiv 2408.08070 §3.1: four layers ``x + Mamba(LN(x))``,
``x + MLP(LN(x))`` with a fixed 3-D sin-cos position embedding) and, twelve layers deep, as the
encoder of Vanilla Mamba. Tokens are serialised by a named scan order (:mod:`mambamim.nn.scan_orders`)
before the layers and put back in raster order after them. The position embedding and scan order are
computed per grid and cached on the module (not in the state dict), so one stage runs on any grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mambamim.nn.mamba import BiMamba, Mamba
from mambamim.nn.scan_orders import check_scan_order, inverse_permutation, scan_permutation


def sincos_position_embedding_3d(
    grid: tuple[int, int, int], dim: int, temperature: float = 10000.0
) -> torch.Tensor:
    """Fixed 3-D sin-cos position embedding, (N, dim) float32 in raster order of ``grid`` (D, H, W).

    Each axis gets ``dim // 6`` frequencies as [sin, cos] pairs, laid out [d | h | w]; channels left
    over when ``dim`` is not a multiple of 6 stay zero.
    """
    if dim < 6:
        raise ValueError(f"dim must be at least 6 for a 3-D sin-cos position embedding, got {dim}")
    n_freq = dim // 6
    omega = 1.0 / temperature ** (torch.arange(n_freq, dtype=torch.float64) / n_freq)
    coords = torch.meshgrid(*(torch.arange(g, dtype=torch.float64) for g in grid), indexing="ij")
    parts = []
    for c in coords:
        angle = c.reshape(-1, 1) * omega
        parts += [angle.sin(), angle.cos()]
    emb = torch.cat(parts, dim=1)
    if emb.shape[1] < dim:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], dim - emb.shape[1])], dim=1)
    return emb.float()


class Mlp(nn.Module):
    """Token-wise two-layer perceptron with GELU."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MambaLayer(nn.Module):
    """Pre-norm Mamba layer: ``x = x + mixer(norm1(x)); x = x + mlp(norm2(x))`` on (B, L, dim)."""

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        mlp_ratio: float = 4.0,
        bidirectional: bool = False,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        mixer_cls = BiMamba if bidirectional else Mamba
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer_cls(
            d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand, layer_idx=layer_idx
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, round(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionMambaStage(nn.Module):
    """``depth`` MambaLayers (+ a final LayerNorm) over the tokens of a (B, dim, D, H, W) map.

    Args:
        dim: channels = token width.
        depth: number of MambaLayers.
        d_state, d_conv, expand: Mamba hyper-parameters (mamba-ssm names).
        scan_order: one of :data:`~mambamim.nn.scan_orders.SCAN_ORDERS`.
        seed: seed of the ``shuffle`` order.
        bidirectional: use :class:`~mambamim.nn.mamba.BiMamba` (forward + backward scan).
        mlp_ratio: hidden width of each layer's MLP relative to ``dim``.
        final_norm: a LayerNorm after the last layer (ViT / Vanilla Mamba style; the published HyMamba
            has none).
    """

    def __init__(
        self,
        dim: int,
        depth: int = 4,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        scan_order: str = "raster",
        seed: int = 0,
        bidirectional: bool = False,
        mlp_ratio: float = 4.0,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        check_scan_order(scan_order)
        self.dim = dim
        self.scan_order_name = scan_order
        self.seed = seed
        self.layers = nn.ModuleList(
            MambaLayer(dim, d_state, d_conv, expand, mlp_ratio, bidirectional, layer_idx=i)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        self._cache: dict[tuple, torch.Tensor | tuple[torch.Tensor, torch.Tensor]] = {}

    # Cache entries are built outside inference mode: an inference tensor (first call under
    # torch.inference_mode, e.g. validation) could not be saved for a later training backward.

    def position_embedding(
        self, grid: tuple[int, int, int], device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """Fixed sin-cos embedding (N, dim) in raster order of ``grid``, cached per grid/device/dtype."""
        key = ("pos", tuple(grid), torch.device(device), dtype)
        if key not in self._cache:
            with torch.inference_mode(False):
                emb = sincos_position_embedding_3d(tuple(grid), self.dim)
                self._cache[key] = emb.to(device=device, dtype=dtype)
        return self._cache[key]

    def scan_order(
        self, grid: tuple[int, int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(perm, inverse) of this stage's scan order on ``grid``; ``seq = raster[:, perm]``."""
        key = ("scan", tuple(grid), torch.device(device))
        if key not in self._cache:
            with torch.inference_mode(False):
                perm = scan_permutation(self.scan_order_name, tuple(grid), self.seed).to(device)
                self._cache[key] = (perm, inverse_permutation(perm))
        return self._cache[key]

    def forward_sequence(
        self, seq: torch.Tensor, return_layers: Sequence[int] = ()
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Layers (+ final norm) on an already ordered (B, L, dim) sequence (any L, e.g. visible tokens only).

        With ``return_layers`` (1-based layer numbers) also returns those layers' raw outputs.
        """
        wanted = set(return_layers)
        if any(not 1 <= i <= len(self.layers) for i in wanted):
            raise ValueError(f"return_layers must lie in 1..{len(self.layers)}, got {sorted(wanted)}")
        taken = []
        for i, layer in enumerate(self.layers, start=1):
            seq = layer(seq)
            if i in wanted:
                taken.append(seq)
        out = self.norm(seq)
        return (out, taken) if return_layers else out

    def forward(
        self, x: torch.Tensor, return_layers: Sequence[int] = ()
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, dim, D, H, W) -> same shape; with ``return_layers`` also those layers' outputs as maps."""
        if x.ndim != 5 or x.shape[1] != self.dim:
            raise ValueError(
                f"VisionMambaStage expects x of shape (B, {self.dim}, D, H, W), got {tuple(x.shape)}"
            )
        b, c, *grid = x.shape
        grid = tuple(grid)
        seq = x.flatten(2).transpose(1, 2) + self.position_embedding(grid, x.device, x.dtype)
        ordered = self.scan_order_name != "raster"
        if ordered:
            perm, inverse = self.scan_order(grid, x.device)
            seq = seq[:, perm]
        result = self.forward_sequence(seq, return_layers)
        out, taken = result if return_layers else (result, [])

        def to_map(s: torch.Tensor) -> torch.Tensor:
            if ordered:
                s = s[:, inverse]
            return s.transpose(1, 2).reshape(b, c, *grid)

        if return_layers:
            return to_map(out), [to_map(t) for t in taken]
        return to_map(out)
