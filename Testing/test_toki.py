"""TOKI (MambaMIM Eq. 8) against hand-computed values and a plain loop over runs."""

from __future__ import annotations

import pytest
import torch
from mambamim.mim.toki import TOKI, toki_fill


def reference_toki(tokens: torch.Tensor, masked: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """Eq. 8 written literally: loop over samples and runs (slow, obviously right)."""
    out = tokens.clone()
    for b in range(tokens.shape[0]):
        flags = masked[b].tolist()
        n = len(flags)
        p = 0
        while p < n:
            if not flags[p]:
                p += 1
                continue
            start = p
            while p < n and flags[p]:
                p += 1
            q = p - start
            left = tokens[b, start - 1] if start > 0 else tokens[b, p]
            right = tokens[b, p] if p < n else tokens[b, start - 1]
            state = torch.zeros_like(left)
            for j in range(1, q + 1):
                alpha = j / (q + 2)
                state = decay * state + (1 - alpha) * left + alpha * right
                out[b, start + j - 1] = state
    return out


def test_hand_computed_one_dimensional_example():
    # positions: 0 1 2 3 4 5 6 7 8 9
    # masked:    M . M . M M M . M M   -> runs: start (Q=1), middle Q=1, middle Q=3, end Q=2
    masked = torch.tensor([[1, 0, 1, 0, 1, 1, 1, 0, 1, 1]], dtype=torch.bool)
    values = torch.tensor([99.0, 1.0, 99.0, 3.0, 99.0, 99.0, 99.0, 7.0, 99.0, 99.0]).view(1, 10, 1)
    out = toki_fill(values, masked, torch.tensor([0.5])).flatten()
    expected = [
        1.0,  # start run: only the right neighbour y1 = 1
        1.0,
        1.0 + 2.0 / 3.0,  # Q=1 between 1 and 3: alpha = 1/3
        3.0,
        3.8,  # Q=3 between 3 and 7: V = 3.8, 4.6, 5.4 (alpha = j/5); z1 = V1
        0.5 * 3.8 + 4.6,  # z2 = A z1 + V2 = 6.5
        0.5 * 6.5 + 5.4,  # z3 = 8.65
        7.0,
        7.0,  # end run: only the left neighbour, z1 = 7
        0.5 * 7.0 + 7.0,  # z2 = 10.5
    ]
    assert out.tolist() == pytest.approx(expected)


def test_matches_literal_loop_on_random_batches():
    torch.manual_seed(1)
    tokens = torch.randn(3, 40, 5, dtype=torch.float64)
    masked = torch.rand(3, 40) < 0.7
    masked[:, 7] = False  # at least one visible token per sample
    masked[0, 0] = masked[1, -1] = True  # runs at both ends
    decay = torch.tensor([0.05, 0.3, 0.5, 0.9, 0.999], dtype=torch.float64)
    assert torch.allclose(toki_fill(tokens, masked, decay), reference_toki(tokens, masked, decay))


def test_long_run_stays_finite_for_extreme_decays():
    tokens = torch.randn(1, 216, 3)
    masked = torch.ones(1, 216, dtype=torch.bool)
    masked[0, 100] = False
    for theta in (-30.0, -5.0, 0.0, 5.0, 30.0):
        module = TOKI(3)
        with torch.no_grad():
            module.theta.fill_(theta)
        decay = module.decay()
        assert bool((decay > 0).all()) and bool((decay <= 1).all())
        if abs(theta) <= 5:
            assert bool((decay < 1).all())
        assert torch.isfinite(module(tokens, masked)).all()


def test_visible_tokens_pass_unchanged_and_theta_learns():
    module = TOKI(4)
    tokens = torch.randn(2, 12, 4)
    masked = torch.zeros(2, 12, dtype=torch.bool)
    masked[:, 2:6] = True
    out = module(tokens, masked)
    assert torch.equal(out[~masked], tokens[~masked])
    assert module.decay().tolist() == pytest.approx([0.5] * 4)
    out[masked].square().sum().backward()
    assert module.theta.grad is not None and bool((module.theta.grad != 0).all())


def test_all_masked_sample_is_refused():
    with pytest.raises(ValueError, match="visible"):
        toki_fill(torch.zeros(1, 4, 2), torch.ones(1, 4, dtype=torch.bool), torch.full((2,), 0.5))
