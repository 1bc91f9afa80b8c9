"""Scan orders: how a 3-D token grid is serialised into the 1-D sequence a Mamba layer reads.

A scan order is a permutation ``perm`` of the raster indices (C-order flatten of (D, H, W), i.e.
``x.flatten(2)``): sequence position ``i`` holds raster token ``perm[i]``. Tokens are gathered with
``perm`` before the Mamba layers and scattered back with ``inverse_permutation(perm)`` afterwards.

- ``raster``: plain C-order flatten.
- ``zigzag``: boustrophedon; every row and every slice reverses direction so that consecutive
  tokens are always face neighbours.
- ``hilbert``: a generalised 3-D Hilbert curve (after Červený's "gilbert" construction) that covers
  any box, including non-power-of-two grids such as 6³. On grids whose sides are all even every step
  is to a face neighbour; boxes with odd sides need a few diagonal steps (still to one of the 26
  neighbours), as in the original construction.
- ``shuffle``: a fixed random permutation drawn from ``seed`` (locality-free control).
"""

from __future__ import annotations

from functools import lru_cache

import torch

SCAN_ORDERS = ("raster", "zigzag", "hilbert", "shuffle")

Vec = tuple[int, int, int]


def _check_grid(grid: tuple[int, ...]) -> tuple[int, int, int]:
    if len(grid) != 3 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid must be three positive sizes (D, H, W), got {tuple(grid)}")
    return int(grid[0]), int(grid[1]), int(grid[2])


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _add(a: Vec, b: Vec) -> Vec:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _neg(a: Vec) -> Vec:
    return (-a[0], -a[1], -a[2])


def _length(a: Vec) -> int:
    # Axis vectors are non-zero along exactly one axis.
    return abs(a[0] + a[1] + a[2])


def _unit(a: Vec) -> Vec:
    return (_sign(a[0]), _sign(a[1]), _sign(a[2]))


def _half(a: Vec) -> Vec:
    """Half of an axis vector, rounded up to an even length when the full length exceeds 2.

    Even halves let the sub-curves start and end on the corners the next sub-curve needs, which is
    what keeps every step face-adjacent; floor division rounds toward -inf, so halve magnitudes.
    """
    n = _length(a)
    u = _unit(a)
    h = n // 2
    if h % 2 and n > 2:
        h += 1
    return (u[0] * h, u[1] * h, u[2] * h)


def _gilbert(origin: Vec, a: Vec, b: Vec, c: Vec, out: list[Vec]) -> None:
    """Append the cells of the box spanned by axis vectors ``a`` (main), ``b``, ``c`` from ``origin``.

    The curve starts at ``origin`` and ends at the far end of ``a`` (origin + a - unit(a)), so boxes
    chain end to start. The box is split into 2-5 sub-boxes whose curves are chained recursively.
    """
    w, h, d = _length(a), _length(b), _length(c)
    ua, ub, uc = _unit(a), _unit(b), _unit(c)

    # A line: walk it.
    for n, u, other in ((w, ua, (h, d)), (h, ub, (w, d)), (d, uc, (w, h))):
        if other == (1, 1):
            p = origin
            for _ in range(n):
                out.append(p)
                p = _add(p, u)
            return

    a2, b2, c2 = _half(a), _half(b), _half(c)

    if 2 * w > 3 * h and 2 * w > 3 * d:
        # Long along a: cut it in two and run both halves along a.
        _gilbert(origin, a2, b, c, out)
        _gilbert(_add(origin, a2), _sub(a, a2), b, c, out)
    elif 3 * h > 4 * d:
        # Flat in c: split a and b only (c stays whole).
        _gilbert(origin, b2, c, a2, out)
        _gilbert(_add(origin, b2), a, _sub(b, b2), c, out)
        start = _add(origin, _add(_sub(a, ua), _sub(b2, ub)))
        _gilbert(start, _neg(b2), c, _neg(_sub(a, a2)), out)
    elif 3 * d > 4 * h:
        # Flat in b: split a and c only.
        _gilbert(origin, c2, a2, b, out)
        _gilbert(_add(origin, c2), a, b, _sub(c, c2), out)
        start = _add(origin, _add(_sub(a, ua), _sub(c2, uc)))
        _gilbert(start, _neg(c2), _neg(_sub(a, a2)), b, out)
    else:
        # Roughly cubic: the classic 8-octant Hilbert step folded into five sub-boxes.
        _gilbert(origin, b2, c2, a2, out)
        _gilbert(_add(origin, b2), c, a2, _sub(b, b2), out)
        start = _add(origin, _add(_sub(b2, ub), _sub(c, uc)))
        _gilbert(start, a, _neg(b2), _neg(_sub(c, c2)), out)
        start = _add(origin, _add(_sub(a, ua), _add(b2, _sub(c, uc))))
        _gilbert(start, _neg(c), _neg(_sub(a, a2)), _sub(b, b2), out)
        start = _add(origin, _add(_sub(a, ua), _sub(b2, ub)))
        _gilbert(start, _neg(b2), c2, _neg(_sub(a, a2)), out)


def hilbert_cells(grid: tuple[int, int, int]) -> list[Vec]:
    """The (d, h, w) cells of ``grid`` in generalised-Hilbert order, starting at the origin."""
    dd, hh, ww = _check_grid(grid)
    out: list[Vec] = []
    # Run the main axis along the longest side; the curve is expressed in (d, h, w) coordinates.
    axes = {"d": (dd, 0, 0), "h": (0, hh, 0), "w": (0, 0, ww)}
    order = sorted(axes, key=lambda k: -_length(axes[k]))
    a, b, c = (axes[k] for k in order)
    _gilbert((0, 0, 0), a, b, c, out)
    return out


def _raster_index(cells: list[Vec], grid: tuple[int, int, int]) -> torch.Tensor:
    t = torch.tensor(cells, dtype=torch.long)
    return (t[:, 0] * grid[1] + t[:, 1]) * grid[2] + t[:, 2]


def _zigzag(grid: tuple[int, int, int]) -> torch.Tensor:
    dd, hh, ww = grid
    cells: list[Vec] = []
    row = 0
    for d in range(dd):
        hs = range(hh) if d % 2 == 0 else range(hh - 1, -1, -1)
        for h in hs:
            ws = range(ww) if row % 2 == 0 else range(ww - 1, -1, -1)
            cells.extend((d, h, w) for w in ws)
            row += 1
    return _raster_index(cells, grid)


@lru_cache(maxsize=64)
def _cached_permutation(name: str, grid: tuple[int, int, int], seed: int) -> torch.Tensor:
    n = grid[0] * grid[1] * grid[2]
    if name == "raster":
        return torch.arange(n)
    if name == "zigzag":
        return _zigzag(grid)
    if name == "hilbert":
        return _raster_index(hilbert_cells(grid), grid)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)


def check_scan_order(name: str) -> None:
    """Raise ValueError naming the argument and the valid names unless ``name`` is a scan order."""
    if name not in SCAN_ORDERS:
        valid = ", ".join(SCAN_ORDERS)
        raise ValueError(f"unknown scan order {name!r} for argument 'scan_order'; valid: {valid}")


def scan_permutation(name: str, grid: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """Permutation (LongTensor, length prod(grid)): sequence position ``i`` reads raster index ``perm[i]``.

    ``seed`` only affects ``shuffle``. Results are cached; a fresh copy is returned each call.
    """
    check_scan_order(name)
    return _cached_permutation(name, _check_grid(grid), int(seed) if name == "shuffle" else 0).clone()


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``inv`` with ``inv[perm[i]] = i``: ``seq[..., inv]`` puts an ordered sequence back in raster order."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device, dtype=perm.dtype)
    return inv
