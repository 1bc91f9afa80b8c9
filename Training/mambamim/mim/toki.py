"""TOKI: state-space token interpolation of masked Mamba tokens (arXiv 2408.08070, Alg. 3, Eq. 8).

The Mamba stage only sees the visible tokens. TOKI rebuilds the masked ones in scan order: for a run of
``Q`` consecutive masked tokens between the visible outputs ŷ_i (before the run) and ŷ_{i+1} (after it),
token ``j`` of the run (``j = 1 … Q``) is first interpolated linearly,

    V_j = (1 - α_j) · ŷ_i + α_j · ŷ_{i+1},      α_j = j / (Q + 2),

and the run is then filled with a causal state-space recurrence over the run,

    z_j = Σ_{n=1..j} Ā'^{j-n} · V_n        (i.e. z_1 = V_1, z_j = Ā' · z_{j-1} + V_j),

with Ā' a learnable per-channel (diagonal) state matrix kept in (0, 1) by Ā' = exp(-softplus(θ)).

Choices the paper leaves open, made here:
- α_j = j / (Q + 2) with j counted from 1 inside the run, as the project's issue transcribes Eq. 8 (the
  equation text itself could not be re-checked here). The weight lives in :func:`interpolation_weight`
  only; any α_j = j / c(Q) keeps the closed form below valid. The published code differs: it uses
  ``linspace(0, 1)`` over the gap starting at the left visible token, and a full C×C matrix.
- Ā' is diagonal (one decay per channel, as the issue asks), not a full matrix: cheap, always stable,
  and it makes the recurrence a closed form (below). θ starts at 0, so Ā' starts at 0.5.
- The recurrence starts inside each run (n ≥ 1): visible tokens keep their Mamba output unchanged and
  do not enter the sum; runs do not influence one another.
- A run at the start (end) of the sequence has only one visible neighbour; both endpoints are that
  neighbour, so V_j equals it for every j.
- z is not renormalised by Σ Ā'^k: the decoder's projection that follows absorbs the scale.

Closed form (no loop over tokens or runs): since V_n = ŷ_i + α_n (ŷ_{i+1} - ŷ_i),

    z_j = ŷ_i · S_j + (ŷ_{i+1} - ŷ_i) · W_j / (Q + 2),
    S_j = Σ_{k<j} Ā'^k,   W_j = Σ_{n=1..j} n Ā'^{j-n} = j · S_j - Σ_{k<j} k Ā'^k,

where S and W come from one cumulative sum over a power table of length N (shared by all runs and
samples), and each masked token gathers its own ŷ_i, ŷ_{i+1}, j and Q.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def interpolation_weight(j: torch.Tensor, run_length: torch.Tensor) -> torch.Tensor:
    """α_j = j / (Q + 2) for token ``j`` (1-based) of a masked run of length ``Q`` (Eq. 8)."""
    return j / (run_length + 2)


def run_positions(masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every position of a (B, N) masked-flag sequence: index of the previous and next visible token.

    Returns ``(prev, next)`` (B, N) long; ``prev = -1`` when there is no visible token before,
    ``next = N`` when there is none after. For a visible position both equal the position itself.
    """
    n = masked.shape[1]
    index = torch.arange(n, device=masked.device).expand_as(masked)
    prev = torch.where(masked, torch.full_like(index, -1), index).cummax(dim=1).values
    after = torch.where(masked, torch.full_like(index, n), index)
    nxt = after.flip(1).cummin(dim=1).values.flip(1)
    return prev, nxt


def toki_fill(tokens: torch.Tensor, masked: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """Replace the masked tokens of a scan-ordered sequence by their TOKI interpolation (Eq. 8).

    Args:
        tokens: (B, N, C) sequence in scan order; values at masked positions are ignored.
        masked: (B, N) bool, True where the token was masked.
        decay: (C,) per-channel state Ā' in (0, 1).

    Returns:
        (B, N, C) in ``tokens``' dtype: visible tokens unchanged, masked tokens = z_j (computed in float32
        at least, since the power sums lose too much in bfloat16 under autocast).
    """
    if tokens.dim() != 3 or masked.shape != tokens.shape[:2]:
        raise ValueError(
            f"tokens must be (B, N, C) and masked (B, N); got {tuple(tokens.shape)} and {tuple(masked.shape)}"
        )
    if decay.shape != tokens.shape[2:]:
        raise ValueError(f"decay must have shape ({tokens.shape[2]},), got {tuple(decay.shape)}")
    if bool(masked.all(dim=1).any()):
        raise ValueError("TOKI needs at least one visible token per sample")
    out_dtype = tokens.dtype
    tokens = tokens.to(torch.promote_types(tokens.dtype, torch.float32))
    batch, n, channels = tokens.shape
    prev, nxt = run_positions(masked)
    index = torch.arange(n, device=tokens.device)
    j = index - prev  # 1 … Q inside a run
    run_length = nxt - prev - 1

    def gather(positions: torch.Tensor) -> torch.Tensor:
        return tokens.gather(1, positions.clamp(0, n - 1).unsqueeze(-1).expand(batch, n, channels))

    left, right = gather(prev), gather(nxt)
    has_left, has_right = (prev >= 0).unsqueeze(-1), (nxt < n).unsqueeze(-1)
    left, right = torch.where(has_left, left, right), torch.where(has_right, right, left)

    # Power table Ā'^k, k = 0 … N-1, in log space (stable for any decay in (0, 1)).
    k = index.to(tokens.dtype).unsqueeze(1)  # (N, 1)
    powers = torch.exp(k * torch.log(decay.to(tokens.dtype)).unsqueeze(0))  # (N, C)
    geometric = powers.cumsum(0)  # S_{k+1} = Σ_{m≤k} Ā'^m
    weighted = (k * powers).cumsum(0)  # Σ_{m≤k} m Ā'^m
    row = (j - 1).clamp(0, n - 1)  # table row of S_j; visible positions read row 0 and are discarded
    s_j = geometric[row]  # (B, N, C)
    jf = j.to(tokens.dtype).unsqueeze(-1)
    w_j = jf * s_j - weighted[row]
    # Σ_n α_n Ā'^{j-n} = W_j / (Q + 2): α is linear in n, so the weight formula applies to W_j itself.
    scale = interpolation_weight(w_j, run_length.to(tokens.dtype).unsqueeze(-1))
    filled = left * s_j + (right - left) * scale
    return torch.where(masked.unsqueeze(-1), filled, tokens).to(out_dtype)


class TOKI(nn.Module):
    """Learnable TOKI filler over ``channels`` features; θ (``theta``) parameterises Ā' = exp(-softplus(θ)).

    Args:
        channels: feature width of the Mamba stage.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.theta = nn.Parameter(torch.zeros(channels))

    def decay(self) -> torch.Tensor:
        """Ā' = exp(-softplus(θ)) ∈ (0, 1) per channel."""
        return torch.exp(-F.softplus(self.theta))

    def forward(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        return toki_fill(tokens, masked, self.decay())
