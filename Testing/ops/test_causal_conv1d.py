"""Causal depthwise conv1d: equals mamba-ssm's nn.Conv1d-and-truncate path, is causal, checks inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mambamim.ops import ENV_VAR, causal_conv1d_fn
from torch import nn


@pytest.mark.parametrize(
    "width, use_bias, activation", [(4, True, "silu"), (2, False, None), (1, True, "swish")]
)
def test_matches_padded_conv_truncated_like_mamba_ssm(width, use_bias, activation):
    conv = nn.Conv1d(6, 6, kernel_size=width, groups=6, padding=width - 1, bias=use_bias).double()
    x = torch.randn(3, 6, 11, dtype=torch.float64, requires_grad=True)
    expected = conv(x)[..., :11]  # mamba_simple.Mamba's slow path
    if activation is not None:
        expected = F.silu(expected)
    out = causal_conv1d_fn(x, conv.weight.squeeze(1), conv.bias, activation)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    got = torch.autograd.grad((out * grad).sum(), [x, conv.weight])
    want = torch.autograd.grad((expected * grad).sum(), [x, conv.weight])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_is_causal():
    weight, x = torch.randn(4, 4), torch.randn(1, 4, 20)
    changed = x.clone()
    changed[..., 12:] = torch.randn(1, 4, 8)
    torch.testing.assert_close(
        causal_conv1d_fn(x, weight)[..., :12], causal_conv1d_fn(changed, weight)[..., :12]
    )
    assert not torch.allclose(
        causal_conv1d_fn(x, weight)[..., 12:], causal_conv1d_fn(changed, weight)[..., 12:]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"x": torch.randn(4, 10)}, "x must be"),
        ({"x": torch.randn(2, 4, 0)}, "at least one time step"),
        ({"weight": torch.randn(5, 4)}, "weight must be"),
        ({"bias": torch.randn(3)}, "bias must have"),
        ({"activation": "relu"}, "activation must be"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, message):
    args = {"x": torch.randn(2, 4, 10), "weight": torch.randn(4, 3), "bias": None, "activation": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        causal_conv1d_fn(**args)


def test_forcing_cuda_on_cpu_is_an_error(monkeypatch):
    x, weight = torch.randn(1, 2, 5), torch.randn(2, 4)
    with pytest.raises(RuntimeError, match="causal_conv1d backend 'cuda' was requested"):
        causal_conv1d_fn(x, weight, backend="cuda")
    monkeypatch.setenv(ENV_VAR, "torch")
    assert causal_conv1d_fn(x, weight).shape == (1, 2, 5)


@pytest.mark.cuda
def test_cuda_kernel_matches_torch():
    pytest.importorskip("causal_conv1d")
    x, weight, bias = (
        torch.randn(2, 64, 100, device="cuda"),
        torch.randn(64, 4, device="cuda"),
        torch.randn(64, device="cuda"),
    )
    torch.testing.assert_close(
        causal_conv1d_fn(x, weight, bias, "silu", backend="cuda"),
        causal_conv1d_fn(x, weight, bias, "silu", backend="torch"),
        rtol=1e-4,
        atol=1e-4,
    )


def test_cuda_dispatch_passes_activation_by_keyword(monkeypatch):
    """causal-conv1d >= 1.2 put seq_idx fourth: the activation must go by keyword."""
    from mambamim.ops import causal_conv1d as module

    def kernel(x, weight, bias=None, seq_idx=None, activation=None):
        assert seq_idx is None
        return module.causal_conv1d_torch(x, weight, bias, activation)

    monkeypatch.setattr(module, "resolve_backend", lambda op, on_cuda, backend=None: "cuda")
    monkeypatch.setattr(module, "cuda_kernel", lambda op: (kernel, "stand-in"))
    x, weight = torch.randn(1, 3, 7), torch.randn(3, 4)
    torch.testing.assert_close(
        causal_conv1d_fn(x, weight, None, "silu"), F.silu(module.causal_conv1d_torch(x, weight))
    )
