"""Scan orders: bijections, inverses, adjacency of the zigzag and generalised Hilbert curves."""

from __future__ import annotations

import itertools

import pytest
import torch
from mambamim.nn.scan_orders import SCAN_ORDERS, hilbert_cells, inverse_permutation, scan_permutation

GRIDS = [(1, 1, 1), (2, 2, 2), (6, 6, 6), (5, 6, 7), (3, 1, 4), (8, 8, 8)]


def _coords(perm: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    d, rem = perm // (grid[1] * grid[2]), perm % (grid[1] * grid[2])
    return torch.stack([d, rem // grid[2], rem % grid[2]], dim=1)


def _steps(perm: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Per step of the sequence: |Δd|, |Δh|, |Δw| between consecutive tokens."""
    return (_coords(perm, grid).diff(dim=0)).abs()


@pytest.mark.parametrize("name", SCAN_ORDERS)
@pytest.mark.parametrize("grid", GRIDS)
def test_every_order_is_a_bijection_and_inverse_restores(name, grid):
    perm = scan_permutation(name, grid, seed=3)
    n = grid[0] * grid[1] * grid[2]
    assert perm.dtype == torch.long and perm.shape == (n,)
    assert torch.equal(perm.sort().values, torch.arange(n))
    x = torch.randn(2, 5, *grid)
    seq = x.flatten(2)[..., perm]
    restored = seq[..., inverse_permutation(perm)].reshape(x.shape)
    assert torch.equal(restored, x)


def test_raster_is_identity_and_shuffle_depends_on_seed_only():
    assert torch.equal(scan_permutation("raster", (3, 4, 5)), torch.arange(60))
    a, b = scan_permutation("shuffle", (6, 6, 6), seed=1), scan_permutation("shuffle", (6, 6, 6), seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, scan_permutation("shuffle", (6, 6, 6), seed=2))
    assert not torch.equal(a, torch.arange(216))


def test_returned_permutation_is_a_copy_of_the_cache():
    perm = scan_permutation("hilbert", (4, 4, 4))
    perm.zero_()
    assert scan_permutation("hilbert", (4, 4, 4)).sort().values.equal(torch.arange(64))


@pytest.mark.parametrize("grid", [(6, 6, 6), (5, 6, 7), (1, 4, 3)])
def test_zigzag_steps_are_always_face_adjacent(grid):
    steps = _steps(scan_permutation("zigzag", grid), grid)
    assert torch.all(steps.sum(dim=1) == 1)


@pytest.mark.parametrize(
    "grid",
    [
        (2, 2, 2),
        (4, 4, 4),
        (8, 8, 8),
        (16, 16, 16),
        (6, 6, 6),
        (12, 12, 12),
        (6, 6, 12),
        (2, 4, 8),
        (4, 6, 10),
    ],
)
def test_hilbert_is_face_adjacent_on_even_grids(grid):
    perm = scan_permutation("hilbert", grid)
    assert torch.all(_steps(perm, grid).sum(dim=1) == 1)
    assert perm[0] == 0  # starts at the origin corner


@pytest.mark.parametrize("grid", [(5, 6, 7), (3, 3, 3), (7, 7, 7), (1, 6, 6), (6, 1, 5)])
def test_hilbert_on_odd_grids_only_steps_to_neighbours(grid):
    steps = _steps(scan_permutation("hilbert", grid), grid)
    assert torch.all(steps.max(dim=1).values == 1)  # one of the 26 neighbours, never a jump
    face = (steps.sum(dim=1) == 1).float().mean()
    assert face > 0.8


def test_hilbert_is_local_unlike_raster():
    """The point of a Hilbert order: tokens close in the sequence are close in space."""
    grid = (8, 8, 8)

    def mean_spread(perm):  # mean distance of tokens 1..16 sequence steps apart
        c = _coords(perm, grid).float()
        return sum((c[w:] - c[:-w]).norm(dim=1).mean() for w in range(1, 17)) / 16

    hilbert = mean_spread(scan_permutation("hilbert", grid))
    assert hilbert < 0.7 * mean_spread(scan_permutation("raster", grid))
    assert hilbert < 0.5 * mean_spread(scan_permutation("shuffle", grid))


def test_hilbert_covers_all_small_boxes():
    for grid in itertools.product(range(1, 6), repeat=3):
        cells = hilbert_cells(grid)
        assert len(set(cells)) == len(cells) == grid[0] * grid[1] * grid[2]
        assert all(0 <= c[i] < grid[i] for c in cells for i in range(3))


def test_unknown_name_and_bad_grid_are_rejected():
    with pytest.raises(ValueError, match=r"scan_order.*raster, zigzag, hilbert, shuffle"):
        scan_permutation("spiral", (2, 2, 2))
    with pytest.raises(ValueError, match="grid"):
        scan_permutation("raster", (2, 0, 2))
    with pytest.raises(ValueError, match="grid"):
        scan_permutation("raster", (2, 2))
