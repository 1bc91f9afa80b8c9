"""TOKI: state-space token interpolation of masked Mamba tokens (arXiv 2408.08070, Alg. 3, Eq. 8).

The Mamba stage only sees the visible tokens. TOKI rebuilds the masked ones in scan order: for a run of
``Q`` consecutive masked tokens between the visible outputs ŷ_i (before the run) and ŷ_{i+1} (after it),
Eq. 8 interpolates linearly,

    s'_n = (Q + 2 - n) / (Q + 2) · ŷ_i + n / (Q + 2) · ŷ_{i+1}      (n = 0 … Q, so s'_0 = ŷ_i),

and fills token ``j`` of the run (``j = 1 … Q``) with a state-space sum that starts at the visible
token itself,

    z_j = Σ_{n=0..j} Ā'^{j-n} · s'_n        (i.e. z_0 = ŷ_i, z_j = Ā' · z_{j-1} + s'_j),

with C' and B̄' the identity and Ā' a learnable per-channel (diagonal) state kept in (0, 1) by
Ā' = exp(-softplus(θ)). Worked example (``../shared/fixtures/paper/toki_eq8.json``, case 1): Q = 3,
Ā' = 0.5, ŷ = (1, 2) gives 1.7, 2.25, 2.725.

Choices the paper leaves open, made here:
- Ā' is diagonal (one decay per channel), not a full matrix: cheap, always stable, and it makes the
  sum a closed form (below). θ starts at 0, so Ā' starts at 0.5. (The authors' code uses a full C×C
  matrix and ``linspace(0, 1)`` weights over the gap; we follow the paper's equation.)
- Visible tokens keep their Mamba output unchanged; runs do not influence one another.
- A run at the start (end) of the sequence has only one visible neighbour; both endpoints are that
  neighbour, so every s'_n equals it.
- z is not renormalised by Σ Ā'^k: the decoder's projection that follows absorbs the scale.

Closed form (no loop over tokens or runs): since s'_n = ŷ_i + n/(Q+2) · (ŷ_{i+1} - ŷ_i),

    z_j = ŷ_i · G_j + (ŷ_{i+1} - ŷ_i) · W_j / (Q + 2),
    G_j = Σ_{k≤j} Ā'^k,   W_j = Σ_{n=1..j} n Ā'^{j-n} = j · G_{j-1} - Σ_{k<j} k Ā'^k,

where G and W come from one cumulative sum over a power table of length N (shared by all runs and
samples), and each masked token gathers its own ŷ_i, ŷ_{i+1}, j and Q.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mambamim.errors import InvalidInput


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
        raise InvalidInput(
            f"tokens must be (B, N, C) and masked (B, N); got {tuple(tokens.shape)} and {tuple(masked.shape)}"
        )
    if decay.shape != tokens.shape[2:]:
        raise InvalidInput(f"decay must have shape ({tokens.shape[2]},), got {tuple(decay.shape)}")
    if bool(masked.all(dim=1).any()):
        raise InvalidInput("TOKI needs at least one visible token per sample")
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
    geometric = powers.cumsum(0)  # row k: G_k = Σ_{m≤k} Ā'^m
    weighted = (k * powers).cumsum(0)  # row k: Σ_{m≤k} m Ā'^m
    # Visible positions (j = 0) read clamped rows; their values are discarded below.
    g_j = geometric[j.clamp(0, n - 1)]  # (B, N, C)
    before = (j - 1).clamp(0, n - 1)
    jf = j.to(tokens.dtype).unsqueeze(-1)
    w_j = jf * geometric[before] - weighted[before]
    filled = left * g_j + (right - left) * w_j / (run_length.to(tokens.dtype).unsqueeze(-1) + 2)
    return torch.where(masked.unsqueeze(-1), filled, tokens).to(out_dtype)


class TOKI(nn.Module):
    """Learnable TOKI filler over ``channels`` features; θ (``theta``) parameterises Ā' = exp(-softplus(θ)).

    Args:
        channels: feature width of the Mamba stage.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise InvalidInput(f"channels must be >= 1, got {channels}")
        self.theta = nn.Parameter(torch.zeros(channels))

    def decay(self) -> torch.Tensor:
        """Ā' = exp(-softplus(θ)) ∈ (0, 1) per channel."""
        return torch.exp(-F.softplus(self.theta))

    def forward(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        return toki_fill(tokens, masked, self.decay())
