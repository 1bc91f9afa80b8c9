"""Float64 step-by-step selective-scan reference and random inputs, shared by the tests and the GPU check.

No pytest here: ``Testing/gpu/check.py`` imports this on machines without it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence of Mamba's Algorithm 2 written one time step at a time in float64."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, L = u.shape
    B = B.unsqueeze(1) if B.dim() == 3 else B
    C = C.unsqueeze(1) if C.dim() == 3 else C
    B = B.repeat_interleave(d // B.shape[1], dim=1)  # (b, d, n, L)
    C = C.repeat_interleave(d // C.shape[1], dim=1)
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[..., t] * u[:, :, t, None]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.double()[:, None]
    if z is not None:
        y = y * F.silu(z.double())
    return y, h


def make_inputs(b, d, L, n, groups_B=0, groups_C=0, delta_max=10.0, dtype=torch.float64, requires_grad=True):
    """Random inputs; groups 0 = B/C shared by all channels (b, n, L). A spans (-16, 0)."""

    def leaf(t):
        return t.to(dtype).requires_grad_(requires_grad)

    def bc(groups):
        return torch.randn(b, n, L) if groups == 0 else torch.randn(b, groups, n, L)

    return {
        "u": leaf(torch.randn(b, d, L)),
        "delta": leaf(torch.rand(b, d, L) * delta_max),
        "A": leaf(-torch.rand(d, n) * 16 - 1e-3),
        "B": leaf(bc(groups_B)),
        "C": leaf(bc(groups_C)),
        "D": leaf(torch.randn(d)),
        "z": leaf(torch.randn(b, d, L)),
        "delta_bias": leaf(torch.randn(d)),
    }


def assert_matches_reference(scan, case, delta_max: float = 10.0) -> None:
    """``scan`` (selective_scan_torch's signature plus ``chunk_size``) against :func:`reference_scan` in
    float64: forward, last state and the gradient of every input. ``case``: (b, d, L, n, groups_B,
    groups_C, use_z, use_D, use_bias, softplus, chunk)."""
    b, d, L, n, groups_B, groups_C, use_z, use_D, use_bias, softplus, chunk = case
    inputs = make_inputs(b, d, L, n, groups_B, groups_C, delta_max=delta_max)
    optional = {
        "D": inputs["D"] if use_D else None,
        "z": inputs["z"] if use_z else None,
        "delta_bias": inputs["delta_bias"] if use_bias else None,
    }
    core = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    out, last = scan(*core, **optional, delta_softplus=softplus, return_last_state=True, chunk_size=chunk)
    ref_out, ref_last = reference_scan(*core, **optional, delta_softplus=softplus)
    assert out.shape == (b, d, L) and last.shape == (b, d, n)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-10)

    leaves = core + [t for t in optional.values() if t is not None]
    grad_out, grad_last = torch.randn_like(out), torch.randn_like(last)
    ours = torch.autograd.grad((out * grad_out).sum() + (last * grad_last).sum(), leaves)
    ref = torch.autograd.grad((ref_out * grad_out).sum() + (ref_last * grad_last).sum(), leaves)
    for got, want in zip(ours, ref):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
