"""Random token masks for MambaMIM's bottom-up 3-D hybrid masking (arXiv 2408.08070, §3.2).

One mask is drawn per sample on the grid of the Mamba stage (6³ tokens for a 96³ crop and an encoder
that downsamples 16×). Every CNN stage and the input use the same mask, upsampled with nearest
neighbour, so all stages hide exactly the same physical region ("masking consistency").
Convention everywhere in :mod:`mambamim.mim`: ``True`` = masked (hidden), ``False`` = visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mambamim.errors import InvalidInput


def masked_token_count(num_tokens: int, ratio: float) -> int:
    """``round(ratio * num_tokens)``; raises unless at least one token is masked and one stays visible.

    Python's ``round`` (half to even) decides ties, as in the reference implementation.
    """
    if not 0.0 < float(ratio) < 1.0:
        raise InvalidInput(f"mask ratio must be in (0, 1), got {ratio}")
    count = round(float(ratio) * num_tokens)
    if not 0 < count < num_tokens:
        raise InvalidInput(
            f"mask ratio {ratio} masks {count} of {num_tokens} tokens; at least one token must be masked "
            "and one visible (use a larger crop or a ratio further from 0 and 1)"
        )
    return count


def random_token_mask(
    batch: int,
    grid: Sequence[int],
    ratio: float,
    generator: torch.Generator | None = None,
) -> torch.BoolTensor:
    """Independent random masks, (batch, *grid), True = masked, exactly round(ratio·N) True per sample.

    The mask is drawn on ``generator``'s device (CPU by default) so that a seeded generator gives the
    same mask on every machine; move it to the model's device afterwards.
    """
    if batch < 1:
        raise InvalidInput(f"batch must be >= 1, got {batch}")
    grid = tuple(int(g) for g in grid)
    if len(grid) != 3 or min(grid) < 1:
        raise InvalidInput(f"grid must be three positive sizes (D, H, W), got {grid}")
    num_tokens = grid[0] * grid[1] * grid[2]
    count = masked_token_count(num_tokens, ratio)
    device = generator.device if generator is not None else torch.device("cpu")
    # A random permutation per sample; its first `count` entries are the masked tokens.
    order = torch.rand(batch, num_tokens, generator=generator, device=device).argsort(dim=1)
    mask = torch.zeros(batch, num_tokens, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :count], True)
    return mask.view(batch, *grid)


def upsample_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.BoolTensor:
    """Nearest-neighbour upsampling of a (B, D, H, W) or (B, 1, D, H, W) mask to spatial ``size``.

    ``size`` must be an integer multiple of the mask grid in every axis, so each token maps to a whole
    block of voxels (what makes the masks of all stages describe the same region). Returns
    (B, 1, *size) bool.
    """
    if mask.dim() == 4:
        mask = mask.unsqueeze(1)
    if mask.dim() != 5 or mask.shape[1] != 1:
        raise InvalidInput(f"mask must be (B, D, H, W) or (B, 1, D, H, W), got shape {tuple(mask.shape)}")
    size = tuple(int(s) for s in size)
    grid = tuple(mask.shape[2:])
    if len(size) != 3 or any(s % g for s, g in zip(size, grid)):
        raise InvalidInput(f"size {size} is not an integer multiple of the mask grid {grid}")
    out = mask.bool()
    for axis, (s, g) in enumerate(zip(size, grid)):
        out = out.repeat_interleave(s // g, dim=2 + axis)
    return out
