"""Mamba / BiMamba blocks: mamba-ssm v1 parameter layout and init, forward = mamba-ssm's slow path,
backward reaches every parameter, causality, and BiMamba = forward scan + flipped backward scan."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mambamim.nn.mamba import BiMamba, Mamba
from mambamim.nn.state_dict import load_partial_state_dict
from scan_reference import reference_scan

BACKWARD_KEYS = ("A_b_log", "D_b", "conv1d_b.", "x_proj_b.", "dt_proj_b.")


def expected_layout(d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", conv_bias=True, bias=False):
    """mamba-ssm v1 ``Mamba`` state dict (key, shape) list from its constructor arithmetic."""
    d_inner = expand * d_model
    rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
    layout = [("A_log", (d_inner, d_state)), ("D", (d_inner,)), ("in_proj.weight", (2 * d_inner, d_model))]
    layout += [("in_proj.bias", (2 * d_inner,))] if bias else []
    layout += [("conv1d.weight", (d_inner, 1, d_conv))]
    layout += [("conv1d.bias", (d_inner,))] if conv_bias else []
    layout += [
        ("x_proj.weight", (rank + 2 * d_state, d_inner)),
        ("dt_proj.weight", (d_inner, rank)),
        ("dt_proj.bias", (d_inner,)),
        ("out_proj.weight", (d_model, d_inner)),
    ]
    layout += [("out_proj.bias", (d_model,))] if bias else []
    return layout


@pytest.mark.parametrize(
    "kwargs",
    [
        {"d_model": 24},
        {"d_model": 40, "d_state": 8, "d_conv": 3, "expand": 1, "bias": True, "conv_bias": False},
        {"d_model": 16, "dt_rank": 5, "d_state": 1},
    ],
)
def test_state_dict_layout_equals_mamba_ssm(kwargs):
    layout = [(k, tuple(v.shape)) for k, v in Mamba(**kwargs).state_dict().items()]
    assert layout == expected_layout(**kwargs)


def test_bimamba_adds_exactly_the_vim_v2_backward_parameters():
    uni = dict(expected_layout(24))
    bi = {k: tuple(v.shape) for k, v in BiMamba(24).state_dict().items()}
    backward = {k: v for k, v in bi.items() if k.startswith(BACKWARD_KEYS)}
    assert {k: v for k, v in bi.items() if k not in backward} == uni
    renamed = {k.replace("_b", "", 1): v for k, v in backward.items()}
    assert renamed == {k: v for k, v in uni.items() if not k.startswith(("in_proj", "out_proj"))}


def test_initialisation_follows_mamba_ssm():
    m = Mamba(32, d_state=6, dt_min=0.01, dt_max=0.05, dt_scale=2.0)
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1.0, 7.0).repeat(64, 1))
    assert torch.equal(m.D, torch.ones(64))
    assert m.A_log._no_weight_decay and m.D._no_weight_decay
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.01 * (1 - 1e-4) and dt.max() <= 0.05 * (1 + 1e-4)
    std = m.dt_rank**-0.5 * 2.0
    assert m.dt_proj.weight.abs().max() <= std and m.dt_proj.weight.std() > std / 3
    constant = Mamba(32, dt_init="constant")
    assert torch.all(constant.dt_proj.weight == constant.dt_rank**-0.5)
    floored = Mamba(16, dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-3)
    torch.testing.assert_close(F.softplus(floored.dt_proj.bias), torch.full((32,), 1e-3))
    bi = BiMamba(16)
    assert bi.A_b_log._no_weight_decay and bi.D_b._no_weight_decay
    assert torch.equal(bi.A_b_log, bi.A_log)


def mamba_ssm_slow_path(m, x, params=("conv1d", "x_proj", "dt_proj", "A_log", "D")):
    """mamba_simple.Mamba.forward without the fused kernel, up to (excluding) out_proj, in float64."""
    conv1d, x_proj, dt_proj, A_log, D = (getattr(m, p) for p in params)
    L = x.shape[1]
    xz = (m.in_proj(x)).transpose(1, 2).double()
    h, z = xz.chunk(2, dim=1)
    h = F.silu(
        F.conv1d(h, conv1d.weight.double(), conv1d.bias.double(), padding=m.d_conv - 1, groups=m.d_inner)
    )
    h = h[..., :L]
    x_dbl = h.transpose(1, 2) @ x_proj.weight.double().T
    dt, B, C = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = (dt @ dt_proj.weight.double().T).transpose(1, 2)
    y, _ = reference_scan(
        h,
        delta,
        -torch.exp(A_log),
        B.transpose(1, 2),
        C.transpose(1, 2),
        D,
        z,
        dt_proj.bias,
        delta_softplus=True,
    )
    return y.transpose(1, 2)


def test_forward_equals_mamba_ssm_slow_path_and_backward_reaches_every_parameter():
    m = Mamba(16, d_state=4, bias=True)
    x = torch.randn(3, 13, 16, requires_grad=True)
    out = m(x)
    assert out.shape == (3, 13, 16) and out.dtype == torch.float32
    expected = F.linear(mamba_ssm_slow_path(m, x), m.out_proj.weight.double(), m.out_proj.bias.double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-5)
    out.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_mamba_is_causal():
    m = Mamba(8, d_state=4)
    x = torch.randn(1, 20, 8)
    changed = x.clone()
    changed[:, 15:] += 1.0
    with torch.no_grad():
        a, b = m(x), m(changed)
    torch.testing.assert_close(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_bimamba_is_forward_scan_plus_flipped_backward_scan():
    bi = BiMamba(16, d_state=4, bias=True)
    forward_branch, backward_branch = Mamba(16, d_state=4, bias=True), Mamba(16, d_state=4, bias=True)
    state = bi.state_dict()
    assert not load_partial_state_dict(forward_branch, state).missing
    backward_state = {k: v for k, v in state.items() if k.startswith(("in_proj", "out_proj"))}
    backward_state.update(
        {k.replace("_b", "", 1): v for k, v in state.items() if k.startswith(BACKWARD_KEYS)}
    )
    backward_branch.load_state_dict(backward_state)
    x = torch.randn(2, 11, 16, requires_grad=True)
    out = bi(x)
    # out_proj is affine, so out_proj(mean of the two scans) = mean of the two branch outputs
    expected = (forward_branch(x) + backward_branch(x.flip(1)).flip(1)) / 2
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    for name, p in bi.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bimamba_sees_both_directions():
    bi = BiMamba(8, d_state=4)
    x = torch.randn(1, 20, 8)
    changed = x.clone()
    changed[:, 15:] += 1.0
    with torch.no_grad():
        assert not torch.allclose(bi(x)[:, :15], bi(changed)[:, :15])


def test_bidirectional_checkpoint_loads_into_mamba_with_report():
    bi, uni = BiMamba(16), Mamba(16)
    report = load_partial_state_dict(uni, bi.state_dict())
    assert not report.missing and not report.shape_mismatched
    assert sorted(report.unexpected) == sorted(k for k in bi.state_dict() if k.startswith(BACKWARD_KEYS))
    assert "unexpected (in the checkpoint, ignored)" in report.summary() and "A_b_log" in report.summary()
    assert torch.equal(uni.x_proj.weight, bi.x_proj.weight)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"d_model": 0}, "d_model must be a positive integer"),
        ({"d_model": 8, "dt_rank": "big"}, "dt_rank must be"),
        ({"d_model": 8, "dt_init": "zeros"}, "dt_init must be"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Mamba(**kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"hidden_states must be \(batch, length >= 1, d_model=8\)"):
        Mamba(8)(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="hidden_states must be"):
        BiMamba(8)(torch.randn(2, 0, 8))


@pytest.mark.cuda
def test_cuda_fast_path_matches_torch(monkeypatch):
    pytest.importorskip("mamba_ssm")
    m = Mamba(64).cuda()
    x = torch.randn(2, 100, 64, device="cuda")
    fast = m(x)
    monkeypatch.setenv("MAMBAMIM_SCAN_BACKEND", "torch")
    torch.testing.assert_close(fast, m(x), rtol=1e-3, atol=1e-3)


def test_fused_path_passes_mamba_inner_fn_arguments(monkeypatch):
    """Without a GPU, stand in mamba-ssm's ``mamba_inner_fn`` (its signature, its slow-path maths) and
    check that the fused branch hands it the right weights."""
    from mambamim.nn import mamba as module

    def mamba_inner_fn(
        xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias, A,
        B=None, C=None, D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None, delta_softplus=True,
    ):  # fmt: skip
        L = xz.shape[-1]
        x, z = xz.double().chunk(2, dim=1)
        x = F.silu(F.conv1d(x, conv1d_weight.double(), conv1d_bias.double(), padding=3, groups=x.shape[1]))
        x = x[..., :L]
        x_dbl = x.transpose(1, 2) @ x_proj_weight.double().T
        rank, n = delta_proj_weight.shape[1], A.shape[1]
        delta = (x_dbl[..., :rank] @ delta_proj_weight.double().T).transpose(1, 2)
        B, C = x_dbl[..., rank : rank + n].transpose(1, 2), x_dbl[..., rank + n :].transpose(1, 2)
        y, _ = reference_scan(x, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return F.linear(y.transpose(1, 2), out_proj_weight.double(), out_proj_bias.double()).float()

    monkeypatch.setattr(module.Mamba, "_fast_path", lambda self, xz: True)
    monkeypatch.setattr(module, "cuda_kernel", lambda op: (mamba_inner_fn, "stand-in"))
    m = Mamba(16, d_state=4, bias=True)
    x = torch.randn(2, 9, 16)
    fused = m(x)
    monkeypatch.setattr(module.Mamba, "_fast_path", lambda self, xz: False)
    torch.testing.assert_close(fused, m(x), rtol=1e-4, atol=1e-5)
