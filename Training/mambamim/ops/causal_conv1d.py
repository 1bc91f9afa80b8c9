"""Causal depthwise 1-D convolution, as in Mamba's block (Gu & Dao, 2023, §3.4, Figure 3).

``out[b, c, t] = act(bias[c] + sum_k weight[c, k] * x[b, c, t - (w - 1) + k])`` with zeros before t = 0,
so position t never sees the future. Runs the ``causal-conv1d`` CUDA kernel when it imports and the
tensors are on CUDA (see :mod:`mambamim.ops.backends`), else ``F.conv1d`` with left padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mambamim.ops.backends import cuda_kernel, resolve_backend

ACTIVATIONS = (None, "silu", "swish")


def causal_conv1d_torch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """Pure-PyTorch causal depthwise conv1d: left-pad by ``width - 1`` and convolve per channel."""
    _check_inputs(x, weight, bias, activation)
    channels, width = weight.shape
    out = F.conv1d(F.pad(x, (width - 1, 0)), weight.unsqueeze(1), bias, groups=channels)
    return F.silu(out) if activation is not None else out


def causal_conv1d_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Causal depthwise conv1d with causal-conv1d's arguments.

    Args:
        x: (batch, channels, L). weight: (channels, width). bias: (channels,).
        activation: None, "silu" or "swish" (the same function).
        backend: "auto" | "cuda" | "torch"; default from ``MAMBAMIM_SCAN_BACKEND`` (else "auto").
    """
    _check_inputs(x, weight, bias, activation)
    if resolve_backend("causal_conv1d", x.is_cuda, backend) == "cuda":
        kernel, _ = cuda_kernel("causal_conv1d")
        return kernel(x, weight, bias, activation=activation)  # keyword: later versions add seq_idx
    return causal_conv1d_torch(x, weight, bias, activation)


def _check_inputs(x, weight, bias, activation) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, channels, L), got shape {tuple(x.shape)}")
    if x.shape[-1] < 1:
        raise ValueError("x must have at least one time step (L >= 1)")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"weight must be (channels={x.shape[1]}, width), got shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"bias must have shape ({x.shape[1]},), got {tuple(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
