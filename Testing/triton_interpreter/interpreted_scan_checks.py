"""Triton selective scan under Triton's interpreter: forward and every gradient against the float64 reference.

Not collected by the main test run (the file name does not start with ``test_``): Triton reads
``TRITON_INTERPRET`` when a kernel is decorated, so these checks need a fresh process that sets it
before anything imports Triton. ``Testing/ops/test_selective_scan_triton.py`` runs this file that way:

    TRITON_INTERPRET=1 python -m pytest Testing/triton_interpreter/interpreted_scan_checks.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs TRITON_INTERPRET=1 before Triton is imported", allow_module_level=True)
pytest.importorskip("triton")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/: the shared float64 reference
from mambamim.ops import selective_scan_fn
from mambamim.ops.selective_scan_triton import selective_scan_triton
from scan_reference import assert_matches_reference, make_inputs, reference_scan

CASES = [
    # b, d, L, n, groups_B, groups_C, use_z, use_D, use_bias, softplus, chunk
    (1, 4, 1, 1, 0, 0, False, False, False, False, None),  # one step, nothing optional
    (2, 6, 37, 5, 2, 2, True, True, True, True, 16),  # 3 chunks, last one partial; n not a power of 2
    (2, 4, 33, 16, 0, 1, False, False, True, True, 16),  # shared B (3-D) with a one-group C
    (1, 12, 20, 2, 1, 1, True, True, False, False, 4),  # 12 channels per group: 3 channel blocks
    (2, 6, 9, 3, 2, 2, True, False, True, False, None),  # 3 channels per group: a masked channel row
]


@pytest.mark.parametrize("b, d, L, n, groups_B, groups_C, use_z, use_D, use_bias, softplus, chunk", CASES)
def test_forward_and_every_gradient_match_reference(
    b, d, L, n, groups_B, groups_C, use_z, use_D, use_bias, softplus, chunk
):
    torch.manual_seed(b * 1000 + d * 100 + L)
    case = (b, d, L, n, groups_B, groups_C, use_z, use_D, use_bias, softplus, chunk)
    assert_matches_reference(selective_scan_triton, case, delta_max=2.0)


def test_float32_with_large_steps_is_finite_and_accurate():
    """delta up to 10 with |A| up to 16: decays down to exp(-160), no NaN/inf."""
    inputs = make_inputs(2, 4, 40, 16, delta_max=10.0, dtype=torch.float32)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    out = selective_scan_triton(*args, D=inputs["D"], z=inputs["z"], chunk_size=16)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(inputs[k].grad).all() for k in ("u", "delta", "A", "B", "C"))
    ref = reference_scan(*args, D=inputs["D"], z=inputs["z"])[0]
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_public_function_dispatches_to_triton_and_keeps_dtype():
    inputs = make_inputs(1, 4, 10, 3, dtype=torch.bfloat16, requires_grad=False)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    out, last = selective_scan_fn(*args, z=inputs["z"], return_last_state=True, backend="triton")
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    want = reference_scan(*args, z=inputs["z"])[0]
    torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=2e-2)


def test_only_the_used_output_needs_a_gradient():
    inputs = make_inputs(1, 2, 6, 2, delta_max=2.0)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    _out, last = selective_scan_triton(*args, return_last_state=True)
    (grad_u,) = torch.autograd.grad(last.sum(), [inputs["u"]])
    _ref_out, ref_last = reference_scan(*args)
    (want,) = torch.autograd.grad(ref_last.sum(), [inputs["u"]])
    torch.testing.assert_close(grad_u, want, rtol=1e-9, atol=1e-9)
