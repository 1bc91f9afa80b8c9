"""TOKI (MambaMIM Eq. 8) against the paper's worked example and the equation computed independently
(``../shared/fixtures/paper/toki_eq8.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mambamim.mim.toki import TOKI, toki_fill

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "paper" / "toki_eq8.json"


def eq8_cases() -> list[dict]:
    if not FIXTURE.is_file():
        pytest.skip(f"reference fixture {FIXTURE} not available")
    return json.loads(FIXTURE.read_text())["cases"]


def test_paper_worked_example():
    """Eq. 8 sums from n = 0 (s'_0 = ŷ_i): Q = 3, Ā' = 0.5, ŷ = (1, 2) gives 1.7, 2.25, 2.725."""
    tokens = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0], dtype=torch.float64).view(1, 5, 1)
    masked = torch.tensor([[False, True, True, True, False]])
    out = toki_fill(tokens, masked, torch.tensor([0.5], dtype=torch.float64)).flatten()
    assert out.tolist() == pytest.approx([1.0, 1.7, 2.25, 2.725, 2.0], abs=1e-12)


def test_matches_the_papers_equation_fixture():
    """Every case of ``paper/toki_eq8.json`` (Eq. 8 computed independently, float64) to 1e-6."""
    for number, case in enumerate(eq8_cases()):
        tokens = torch.tensor(case["tokens"], dtype=torch.float64)
        masked = torch.tensor(case["masked"], dtype=torch.bool)
        decay = torch.tensor(case["decay"], dtype=torch.float64)
        expected = torch.tensor(case["expected"], dtype=torch.float64)
        out = toki_fill(tokens[None], masked[None], decay)[0]
        assert out.dtype == torch.float64
        assert float((out - expected).abs().max()) < 1e-6, f"case {number}"
        # batched with a shifted copy: runs of one sample never influence another
        batch = torch.stack([tokens, tokens.roll(1, 0)])
        flags = torch.stack([masked, masked.roll(1, 0)])
        both = toki_fill(batch, flags, decay)
        assert float((both[0] - expected).abs().max()) < 1e-6, f"case {number} batched"
        single = toki_fill(tokens.roll(1, 0)[None], masked.roll(1, 0)[None], decay)[0]
        torch.testing.assert_close(both[1], single)


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
