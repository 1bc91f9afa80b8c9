"""Selective scan in Triton: forward and backward kernels with mamba-ssm's ``selective_scan_fn`` semantics.

Triton compiles these kernels at run time (it ships with PyTorch's CUDA builds), so GPU users get a fused
scan without building mamba-ssm with nvcc. This module imports ``triton`` at import time: import it
only through :func:`mambamim.ops.backends.triton_scan`, which reports why it cannot when Triton is
missing. With ``TRITON_INTERPRET=1`` set *before* the import, Triton's interpreter runs the same
kernels on CPU tensors (how the tests check them without a GPU).

Recurrence (Gu & Dao, "Mamba", 2023, §3.2, Algorithm 2; same as :mod:`mambamim.ops.selective_scan`)::

    dt  = softplus(delta + delta_bias)                       (each optional)
    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    out = (<C_t, h_t> + D * u_t) * silu(z_t)                  (D, z optional)

One program owns ``BLOCK_D`` channels of one B/C group of one batch element and walks L in chunks of
``BLOCK_L`` steps, carrying the (BLOCK_D, d_state) state from chunk to chunk in registers; inside a chunk
the recurrence is a parallel ``associative_scan`` over pairs (decay, input), composed as
``(a1, x1) ∘ (a2, x2) = (a1 a2, a2 x1 + x2)``. The forward pass keeps only the state at every chunk
start, (b, d, L / BLOCK_L, d_state); the backward pass walks the chunks in reverse, recomputes a
chunk's states from its saved start and runs the adjoint recurrence ``G_t = C_t dy_t + exp(dt_{t+1} A)
G_{t+1}`` as a reverse scan. ``exp(dt_t A) h_{t-1}`` is recovered as ``h_t - dt_t B_t u_t``, so no
shifted state and no division by a decay is needed. Memory is linear in L: sequence lengths of
hundreds of thousands of tokens (Taming Mambas at full resolution) need no more than the inputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_NUM_WARPS = 4
# elements of one (BLOCK_D, BLOCK_N, BLOCK_L) tile: a few such tiles live in registers at once
_TILE_ELEMENTS = 2048


@triton.jit
def _compose(a1, x1, a2, x2):
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _time_step(delta_ptr, bias, offs, mask, SOFTPLUS: tl.constexpr, DTYPE: tl.constexpr):
    """dt = softplus(delta + bias) for a (BLOCK_D, BLOCK_L) tile (0 where masked), and the softplus
    derivative sigmoid(delta + bias) (1 without softplus). ``bias`` is 0 when there is none."""
    raw = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(DTYPE) + bias[:, None]
    if SOFTPLUS:
        dt = tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
        slope = 1.0 / (1.0 + tl.exp(-raw))
    else:
        dt = raw
        slope = tl.full(raw.shape, 1.0, DTYPE)
    dt = tl.where(mask, dt, 0.0)  # a masked step decays by exp(0) = 1 and adds nothing
    return dt, slope


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    out_ptr, last_ptr, starts_ptr,
    d, L, n, d_per_group, blocks_per_group, n_chunks,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, DTYPE: tl.constexpr,
):  # fmt: skip
    batch = tl.program_id(0).to(tl.int64)
    program = tl.program_id(1)
    group = program // blocks_per_group
    offs_dg = (program % blocks_per_group) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_dg < d_per_group
    offs_d = group * d_per_group + offs_dg
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < n
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * n + offs_n[None, :], mask=mask_dn, other=0.0).to(DTYPE)
    bias = tl.zeros((BLOCK_D,), dtype=DTYPE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(DTYPE)
    D = tl.zeros((BLOCK_D,), dtype=DTYPE)
    if HAS_D:
        D = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(DTYPE)
    row = (batch * d + offs_d) * L  # (BLOCK_D,) offsets of u, delta, z, out rows
    bc_row = ((batch * (d // d_per_group) + group) * n + offs_n) * L  # (BLOCK_N,) rows of B, C
    state_offs = ((batch * d + offs_d[:, None]) * n_chunks) * n + offs_n[None, :]
    last_step = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, None, :]
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=DTYPE)
    for chunk in range(0, n_chunks):
        tl.store(starts_ptr + state_offs + chunk * n, h, mask=mask_dn)
        offs_l = chunk * BLOCK_L + tl.arange(0, BLOCK_L)
        mask_l = offs_l < L
        offs = row[:, None] + offs_l[None, :]
        mask = mask_d[:, None] & mask_l[None, :]
        mask_bc = mask_n[:, None] & mask_l[None, :]
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(DTYPE)
        dt, _ = _time_step(delta_ptr, bias, offs, mask, SOFTPLUS, DTYPE)
        B = tl.load(B_ptr + bc_row[:, None] + offs_l[None, :], mask=mask_bc, other=0.0).to(DTYPE)
        C = tl.load(C_ptr + bc_row[:, None] + offs_l[None, :], mask=mask_bc, other=0.0).to(DTYPE)
        decay = tl.exp(dt[:, None, :] * A[:, :, None])
        inputs = (dt * u)[:, None, :] * B[None, :, :]
        decay_prod, states = tl.associative_scan((decay, inputs), 2, _compose)
        states = states + decay_prod * h[:, :, None]
        y = tl.sum(states * C[None, :, :], 1)
        if HAS_D:
            y = y + D[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(DTYPE)
            y = y * z / (1.0 + tl.exp(-z))
        tl.store(out_ptr + offs, y, mask=mask)
        h = tl.sum(tl.where(last_step, states, 0.0), 2)  # masked tail steps keep the last state
    tl.store(last_ptr + (batch * d + offs_d[:, None]) * n + offs_n[None, :], h, mask=mask_dn)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, starts_ptr, dout_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr,
    d, L, n, d_per_group, blocks_per_group, n_chunks,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, DTYPE: tl.constexpr,
):  # fmt: skip
    """Gradients of one program's channels. dA, dD, dbias are per batch element, (b, d, n) / (b, d);
    dB, dC are per channel block, (b, groups, blocks_per_group, n, L): the caller sums the partials."""
    batch = tl.program_id(0).to(tl.int64)
    program = tl.program_id(1)
    group = program // blocks_per_group
    block = program % blocks_per_group
    offs_dg = block * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_dg < d_per_group
    offs_d = group * d_per_group + offs_dg
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < n
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn_offs = offs_d[:, None] * n + offs_n[None, :]
    A = tl.load(A_ptr + dn_offs, mask=mask_dn, other=0.0).to(DTYPE)
    bias = tl.zeros((BLOCK_D,), dtype=DTYPE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(DTYPE)
    D = tl.zeros((BLOCK_D,), dtype=DTYPE)
    if HAS_D:
        D = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(DTYPE)
    row = (batch * d + offs_d) * L
    bc_row = ((batch * (d // d_per_group) + group) * n + offs_n) * L
    partial_row = (((batch * (d // d_per_group) + group) * blocks_per_group + block) * n + offs_n) * L
    state_offs = ((batch * d + offs_d[:, None]) * n_chunks) * n + offs_n[None, :]
    steps = tl.arange(0, BLOCK_L)[None, None, :]
    if HAS_DLAST:  # dLoss/dh after the chunk being processed
        carry = tl.load(dlast_ptr + batch * d * n + dn_offs, mask=mask_dn, other=0.0).to(DTYPE)
    else:
        carry = tl.zeros((BLOCK_D, BLOCK_N), dtype=DTYPE)
    grad_A = tl.zeros((BLOCK_D, BLOCK_N), dtype=DTYPE)
    grad_D = tl.zeros((BLOCK_D,), dtype=DTYPE)
    grad_bias = tl.zeros((BLOCK_D,), dtype=DTYPE)
    for reverse_index in range(0, n_chunks):
        chunk = n_chunks - 1 - reverse_index
        h0 = tl.load(starts_ptr + state_offs + chunk * n, mask=mask_dn, other=0.0).to(DTYPE)
        offs_l = chunk * BLOCK_L + tl.arange(0, BLOCK_L)
        mask_l = offs_l < L
        offs = row[:, None] + offs_l[None, :]
        mask = mask_d[:, None] & mask_l[None, :]
        mask_bc = mask_n[:, None] & mask_l[None, :]
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(DTYPE)
        dt, slope = _time_step(delta_ptr, bias, offs, mask, SOFTPLUS, DTYPE)
        # decay of the *next* step, exp(dt_{t+1} A): the last step of a chunk reads the next chunk's first
        mask_next = mask_d[:, None] & (offs_l + 1 < L)[None, :]
        dt_next, _ = _time_step(delta_ptr, bias, offs + 1, mask_next, SOFTPLUS, DTYPE)
        B = tl.load(B_ptr + bc_row[:, None] + offs_l[None, :], mask=mask_bc, other=0.0).to(DTYPE)
        C = tl.load(C_ptr + bc_row[:, None] + offs_l[None, :], mask=mask_bc, other=0.0).to(DTYPE)
        # recompute the chunk's states from its saved start
        decay = tl.exp(dt[:, None, :] * A[:, :, None])
        inputs = (dt * u)[:, None, :] * B[None, :, :]
        decay_prod, states = tl.associative_scan((decay, inputs), 2, _compose)
        states = states + decay_prod * h0[:, :, None]
        # output gating: out = (y + D u) * silu(z)
        dy = tl.load(dout_ptr + offs, mask=mask, other=0.0).to(DTYPE)
        if HAS_Z:
            z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(DTYPE)
            sig = 1.0 / (1.0 + tl.exp(-z))
            y = tl.sum(states * C[None, :, :], 1)
            if HAS_D:
                y = y + D[:, None] * u
            tl.store(dz_ptr + offs, dy * y * sig * (1.0 + z * (1.0 - sig)), mask=mask)
            dy = dy * z * sig
        grad_u = tl.zeros((BLOCK_D, BLOCK_L), dtype=DTYPE)
        if HAS_D:
            grad_D += tl.sum(dy * u, 1)
            grad_u = dy * D[:, None]
        partial_offs = partial_row[:, None] + offs_l[None, :]
        tl.store(dC_ptr + partial_offs, tl.sum(dy[:, None, :] * states, 0), mask=mask_bc)
        # adjoint: G_t = C_t dy_t + exp(dt_{t+1} A) G_{t+1}, a reverse scan; G after the chunk = carry
        decay_next = tl.exp(dt_next[:, None, :] * A[:, :, None])
        decay_next_prod, G = tl.associative_scan(
            (decay_next, C[None, :, :] * dy[:, None, :]), 2, _compose, reverse=True
        )
        G = G + decay_next_prod * carry[:, :, None]
        carry = tl.sum(tl.where(steps == 0, G, 0.0), 2)
        # G is dLoss/d(dt B u); dLoss/d(dt A) = G_t exp(dt_t A) h_{t-1} = G_t (h_t - dt_t B_t u_t)
        GB = tl.sum(G * B[None, :, :], 1)
        grad_u += GB * dt
        tl.store(du_ptr + offs, grad_u, mask=mask)
        tl.store(dB_ptr + partial_offs, tl.sum(G * (dt * u)[:, None, :], 0), mask=mask_bc)
        G_decay = G * (states - inputs)
        grad_A += tl.sum(G_decay * dt[:, None, :], 2)
        grad_dt = tl.sum(G_decay * A[:, :, None], 1) + GB * u
        grad_delta = tl.where(mask, grad_dt * slope, 0.0)
        tl.store(ddelta_ptr + offs, grad_delta, mask=mask)
        if HAS_BIAS:
            grad_bias += tl.sum(grad_delta, 1)
    tl.store(dA_ptr + batch * d * n + dn_offs, grad_A, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + batch * d + offs_d, grad_D, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + batch * d + offs_d, grad_bias, mask=mask_d)


def _blocks(d_per_group: int, n: int, block_l: int | None) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, BLOCK_L): powers of two, one tile of about ``_TILE_ELEMENTS`` elements."""
    block_n = triton.next_power_of_2(n)
    block_d = min(4, triton.next_power_of_2(d_per_group))
    if block_l is None:
        block_l = max(16, min(128, _TILE_ELEMENTS // (block_d * block_n)))
    if block_l < 1 or block_l & (block_l - 1):
        raise ValueError(f"chunk length must be a power of two, got {block_l}")
    return block_d, block_n, block_l


_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus: bool, block_l: int | None):
        b, d, L = u.shape
        groups, n = B.shape[1], A.shape[1]
        d_per_group = d // groups
        block_d, block_n, block_l = _blocks(d_per_group, n, block_l)
        blocks_per_group = triton.cdiv(d_per_group, block_d)
        n_chunks = triton.cdiv(L, block_l)
        out = torch.empty_like(u)
        last = u.new_empty((b, d, n))
        starts = u.new_empty((b, d, n_chunks, n))
        grid = (b, groups * blocks_per_group)
        _scan_fwd_kernel[grid](
            u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
            delta_bias if delta_bias is not None else u, out, last, starts,
            d, L, n, d_per_group, blocks_per_group, n_chunks,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l, DTYPE=_TL_DTYPE[u.dtype],
            num_warps=_NUM_WARPS,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, starts)
        ctx.config = (softplus, block_d, block_n, block_l, blocks_per_group, n_chunks)
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None
        return out, last

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        u, delta, A, B, C, D, z, delta_bias, starts = ctx.saved_tensors
        softplus, block_d, block_n, block_l, blocks_per_group, n_chunks = ctx.config
        b, d, L = u.shape
        groups, n = B.shape[1], A.shape[1]
        grad_out = torch.zeros_like(u) if grad_out is None else grad_out.to(u.dtype).contiguous()
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dz = torch.empty_like(z) if z is not None else None
        dA = u.new_empty((b, d, n))
        dD = u.new_empty((b, d)) if D is not None else None
        dbias = u.new_empty((b, d)) if delta_bias is not None else None
        dB = u.new_empty((b, groups, blocks_per_group, n, L))
        dC = u.new_empty((b, groups, blocks_per_group, n, L))
        has_dlast = grad_last is not None
        grid = (b, groups * blocks_per_group)
        _scan_bwd_kernel[grid](
            u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
            delta_bias if delta_bias is not None else u, starts, grad_out,
            grad_last.to(u.dtype).contiguous() if has_dlast else u,
            du, ddelta, dz if dz is not None else u, dA, dD if dD is not None else u,
            dbias if dbias is not None else u, dB, dC,
            d, L, n, d // groups, blocks_per_group, n_chunks,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
            HAS_DLAST=has_dlast,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l, DTYPE=_TL_DTYPE[u.dtype],
            num_warps=_NUM_WARPS,
        )  # fmt: skip
        return (
            du,
            ddelta,
            dA.sum(0),
            dB.sum(2),
            dC.sum(2),
            dD.sum(0) if dD is not None else None,
            dz,
            dbias.sum(0) if dbias is not None else None,
            None,
            None,
        )


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk_size: int | None = None,
):
    """Triton selective scan; arguments and results as :func:`mambamim.ops.selective_scan.selective_scan_fn`
    (inputs already checked there). Computes in float32 (float64 for float64 ``u``); ``chunk_size``: time
    steps per chunk, a power of two (default from the tile size)."""
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32

    def prepare(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(compute).contiguous()

    B4 = B if B.dim() == 4 else B.unsqueeze(1)
    C4 = C if C.dim() == 4 else C.unsqueeze(1)
    out, last = _TritonScan.apply(
        prepare(u), prepare(delta), prepare(A), prepare(B4), prepare(C4), prepare(D), prepare(z),
        prepare(delta_bias), bool(delta_softplus), chunk_size,
    )  # fmt: skip
    out = out.to(u.dtype)
    return (out, last) if return_last_state else out
