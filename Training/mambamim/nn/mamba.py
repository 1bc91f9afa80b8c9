"""Mamba block (Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023, §3.4)
and its bidirectional variant (Zhu et al., "Vision Mamba", 2024, §3.2, bimamba "v2").

Parameter names and shapes equal mamba-ssm's ``mamba_simple.Mamba`` (v1), so state dicts load either way.
The fused mamba-ssm CUDA path (``mamba_inner_fn``) runs only for CUDA tensors when it imports and the
scan backend is not forced to "torch"; otherwise the block is composed from :mod:`mambamim.ops`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mambamim.ops import causal_conv1d_fn, selective_scan_fn
from mambamim.ops.backends import cuda_kernel, resolve_backend


def _init_dt_proj(
    dt_proj: nn.Linear,
    dt_rank: int,
    dt_min: float,
    dt_max: float,
    dt_init: str,
    dt_scale: float,
    dt_init_floor: float,
) -> None:
    """mamba-ssm's Δ projection init: weight ~ U(±std) or constant std, std = dt_scale / sqrt(dt_rank);
    bias = softplus⁻¹(dt) with dt log-uniform in [dt_min, dt_max] floored at dt_init_floor, so that
    softplus(bias) starts in the intended step-size range (§3.6 "Δ initialisation")."""
    std = dt_rank**-0.5 * dt_scale
    if dt_init == "constant":
        nn.init.constant_(dt_proj.weight, std)
    elif dt_init == "random":
        nn.init.uniform_(dt_proj.weight, -std, std)
    else:
        raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
    out_features = dt_proj.out_features
    log_dt = torch.rand(out_features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = torch.exp(log_dt).clamp(min=dt_init_floor)
    inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
    with torch.no_grad():
        dt_proj.bias.copy_(inv_dt)
    dt_proj.bias._no_reinit = True


def _s4d_real_log(d_inner: int, d_state: int, device=None) -> torch.Tensor:
    """log of the S4D-real initialisation A[d, n] = n + 1 (A = -exp(A_log) is used in the scan)."""
    A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(d_inner, 1)
    return torch.log(A).contiguous()


class Mamba(nn.Module):
    """Selective-SSM mixer of mamba-ssm v1: in_proj → causal depthwise conv + SiLU → x_proj → (Δ, B, C)
    → selective scan gated by SiLU(z) → out_proj.

    Args:
        d_model: token width. d_state: SSM state size N. d_conv: causal conv width.
        expand: d_inner = expand * d_model. dt_rank: rank of the Δ projection, "auto" = ceil(d_model / 16).
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: Δ initialisation (see ``_init_dt_proj``).
        conv_bias: bias of conv1d. bias: bias of in_proj and out_proj.
        use_fast_path: use mamba-ssm's fused ``mamba_inner_fn`` on CUDA when it imports.
        layer_idx: kept for mamba-ssm compatibility (inference caches).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        sizes = {"d_model": d_model, "d_state": d_state, "d_conv": d_conv, "expand": expand}
        for name, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if dt_rank != "auto" and (not isinstance(dt_rank, int) or dt_rank < 1):
            raise ValueError(f"dt_rank must be 'auto' or a positive integer, got {dt_rank!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx
        self.activation = "silu"

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        direction = (dt_min, dt_max, dt_init, dt_scale, dt_init_floor, conv_bias, factory)
        self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D = self._direction_params(*direction)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        self._add_directions(*direction)

    def _add_directions(self, *direction) -> None:
        """Hook for subclasses scanning more directions (:class:`BiMamba`): ``direction`` are the
        arguments of :meth:`_direction_params`. Called after ``out_proj``, keeping mamba-ssm's key order."""

    def _direction_params(self, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, conv_bias, factory):
        """conv1d, x_proj, dt_proj, A_log, D of one scan direction, initialised as mamba-ssm does; A_log
        and D are fp32 parameters excluded from weight decay, as in mamba-ssm."""
        conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=self.d_conv,
            groups=self.d_inner,
            padding=self.d_conv - 1,
            bias=conv_bias,
            **factory,
        )
        x_proj = nn.Linear(self.d_inner, self.dt_rank + self.d_state * 2, bias=False, **factory)
        dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        _init_dt_proj(dt_proj, self.dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor)
        A_log = nn.Parameter(_s4d_real_log(self.d_inner, self.d_state, device=factory["device"]))
        D = nn.Parameter(torch.ones(self.d_inner, device=factory["device"]))
        A_log._no_weight_decay = D._no_weight_decay = True
        return conv1d, x_proj, dt_proj, A_log, D

    def _check_input(self, hidden_states: torch.Tensor) -> None:
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model or hidden_states.shape[1] < 1:
            shape = tuple(hidden_states.shape)
            raise ValueError(
                f"hidden_states must be (batch, length >= 1, d_model={self.d_model}), got {shape}"
            )

    def _in_projection(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> xz (B, 2 * d_inner, L) with unit stride along L, as mamba-ssm lays it out
        (its CUDA kernels expect that layout)."""
        b, length, _ = hidden_states.shape
        xz = self.in_proj.weight @ hidden_states.reshape(b * length, self.d_model).T
        xz = xz.view(2 * self.d_inner, b, length).permute(1, 0, 2)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(xz.dtype)[:, None]
        return xz

    def _fast_path(self, xz: torch.Tensor) -> bool:
        if not (self.use_fast_path and xz.is_cuda):
            return False
        if resolve_backend("selective_scan", True) != "cuda":
            return False
        return cuda_kernel("mamba_inner")[0] is not None and cuda_kernel("causal_conv1d")[0] is not None

    def _ssm(
        self,
        xz: torch.Tensor,
        conv1d: nn.Conv1d,
        x_proj: nn.Linear,
        dt_proj: nn.Linear,
        A_log: torch.Tensor,
        D: torch.Tensor,
    ) -> torch.Tensor:
        """One scan direction on xz (B, 2 * d_inner, L) -> gated scan output (B, d_inner, L)."""
        A = -torch.exp(A_log.float())
        x, z = xz.chunk(2, dim=1)
        x = causal_conv1d_fn(x, conv1d.weight.squeeze(1), conv1d.bias, activation=self.activation)
        x_dbl = x_proj(x.transpose(1, 2))  # (B, L, dt_rank + 2 * d_state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)  # bias is added inside the scan
        return selective_scan_fn(
            x,
            delta,
            A,
            B.transpose(1, 2),
            C.transpose(1, 2),
            D.float(),
            z=z,
            delta_bias=dt_proj.bias.float(),
            delta_softplus=True,
        )

    def _fused(self, xz: torch.Tensor) -> torch.Tensor:
        """mamba-ssm's fused conv + scan + out_proj kernel (CUDA only) -> (B, L, d_model)."""
        fn = cuda_kernel("mamba_inner")[0]
        return fn(
            xz,
            self.conv1d.weight,
            self.conv1d.bias,
            self.x_proj.weight,
            self.dt_proj.weight,
            self.out_proj.weight,
            self.out_proj.bias,
            -torch.exp(self.A_log.float()),
            B=None,
            C=None,
            D=self.D.float(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states (B, L, d_model) -> (B, L, d_model)."""
        self._check_input(hidden_states)
        xz = self._in_projection(hidden_states)
        if self._fast_path(xz):
            return self._fused(xz)
        y = self._ssm(xz, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D)
        return self.out_proj(y.transpose(1, 2))


class BiMamba(Mamba):
    """Bidirectional Mamba (Vision Mamba "v2"): a second set of scan parameters ``A_b_log, conv1d_b,
    x_proj_b, dt_proj_b, D_b`` scans the flipped sequence (shared in_proj and out_proj).

    ``out = out_proj((y_forward + flip(y_backward(flip(xz)))) / 2)``: the average of both directions,
    as Vim does with ``if_divide_out=True``. The backward Δ projection gets the same initialisation as
    the forward one. Each direction runs the per-op kernels of :mod:`mambamim.ops` (CUDA or PyTorch);
    ``use_fast_path`` has no effect here since mamba-ssm's fused kernel includes out_proj.
    Arguments as :class:`Mamba`.
    """

    def _add_directions(self, *direction) -> None:
        self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b = self._direction_params(
            *direction
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states (B, L, d_model) -> (B, L, d_model)."""
        self._check_input(hidden_states)
        xz = self._in_projection(hidden_states)
        forward_params = (self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D)
        backward_params = (self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b)
        y = self._ssm(xz, *forward_params)
        y_b = self._ssm(xz.flip(-1), *backward_params).flip(-1)
        return self.out_proj(((y + y_b) / 2).transpose(1, 2))
