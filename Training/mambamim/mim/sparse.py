"""Sparse (masked) forward pass of a HyMamba encoder (MambaMIM, arXiv 2408.08070, §3.2, Fig. 4).

The functions here run the *same* modules as :class:`mambamim.nn.hymamba.HyMambaEncoder` (stem,
stages, downsamples, mamba), so pre-trained weights keep their names. Invariant of the CNN path: every
tensor passed between two operators is zero at masked positions.

- stem and channel-raising convolutions: ``mask · conv(mask · x)``; MedNeXt blocks:
  ``mask · block(mask · x)``. Following the encoder's published layout, level i's raising conv runs at
  resolution 1/2^i with the level-i mask and its masked output is skip i; then it is max-pooled.
  A MedNeXt block's depthwise convolution is its only spatially-mixing operator and its LayerNorm is
  per voxel (statistics over the channels of one voxel), so a visible output reads visible inputs and
  zeros only; no statistic is ever taken over masked voxels.
- skip-refining residual blocks (``encoder.skip_blocks``, the published ``embeddings.encoder1..4``, run
  sparsely there too): every convolution's output is masked and the norm is per voxel (channel
  LayerNorm), so ``mask · norm(mask · conv(f))`` is the published sparse LayerNorm of the visible voxels;
  the residual input is already masked and LeakyReLU keeps zeros.
- masked max-pooling: the mask of level i is the Mamba-grid mask upsampled by 2^(L-i), so every 2³
  pooling window is either fully visible or fully masked; max-pooling the zero-filled map and
  re-masking therefore equals a max over visible voxels only.
- Mamba stage: only the visible tokens of each sample, in the stage's scan order, plus their position
  embeddings, go through ``forward_sequence``; their outputs are scattered back into a scan-ordered
  sequence whose masked slots the caller fills (TOKI or a mask token).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mambamim.errors import InvalidInput


def cnn_features(
    encoder: nn.Module, x: torch.Tensor, masks: Sequence[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """The encoder's CNN outputs [skip0 … skip(L-1), fL] (before the Mamba stage), sparse when ``masks``
    are given. ``skip_i`` has ``encoder.feature_channels[i]`` channels at 1/2^i; ``fL`` is the map entering
    the Mamba stage (1/2^L).

    Args:
        encoder: a ``HyMambaEncoder``.
        x: (B, C_in, D, H, W) image.
        masks: per level, bool (B, 1, *size_i), True = masked; ``None`` runs the dense encoder.
    """
    visible = None if masks is None else [(~m).to(x.dtype) for m in masks]

    def keep(f: torch.Tensor, level: int) -> torch.Tensor:
        # Cast the mask, not the map: under autocast f is bf16 and must stay so.
        return f if visible is None else f * visible[level].to(f.dtype)

    def blocks(f: torch.Tensor, level: int) -> torch.Tensor:
        for block in encoder.stages[level]:
            f = keep(block(f), level)
        return f

    def refine(f: torch.Tensor, level: int) -> torch.Tensor:
        block = encoder.skip_blocks[level]
        y = block.act(keep(block.norm1(keep(block.conv1(f), level)), level))
        y = keep(block.norm2(keep(block.conv2(y), level)), level)
        return block.act(y + f)

    if masks is not None and encoder.skip_norm != "layer":
        raise InvalidInput(
            f"sparse pre-training needs per-voxel norms in the skip blocks (skip_norm='layer'), "
            f"got skip_norm={encoder.skip_norm!r}: its statistics would mix masked voxels in"
        )
    f = keep(encoder.stem(keep(x, 0)), 0)
    features = []
    for level, down in enumerate(encoder.downsamples):
        skip = keep(down.conv(blocks(f, level)), level)
        features.append(refine(skip, level))
        f = keep(down.pool(skip), level + 1)
    features.append(blocks(f, len(encoder.downsamples)))
    return features


def visible_token_indices(masked: torch.Tensor) -> torch.Tensor:
    """(B, K) positions of the visible tokens of each (B, N) masked-flag row, in increasing order.

    Every sample must have the same number K of visible tokens (``random_token_mask`` guarantees it).
    """
    visible_counts = (~masked).sum(dim=1)
    if bool((visible_counts != visible_counts[0]).any()):
        raise InvalidInput(
            f"every sample must have the same number of visible tokens, got {visible_counts.tolist()}"
        )
    keep = int(visible_counts[0])
    if keep == 0:
        raise InvalidInput("the mask hides every token; at least one must stay visible")
    # Stable sort puts the visible (False) positions first, in their original order.
    return torch.argsort(masked.to(torch.int8), dim=1, stable=True)[:, :keep]


def visible_mamba_sequence(
    stage: nn.Module, feature: torch.Tensor, masked: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a ``VisionMambaStage`` on the visible tokens of ``feature`` only.

    Args:
        stage: the encoder's ``mamba`` stage.
        feature: (B, C, *grid) map entering the stage.
        masked: (B, *grid) bool, True = masked.

    Returns:
        ``(sequence, masked_seq, inverse)``: (B, N, C) stage outputs in scan order with zeros at masked
        slots, the (B, N) masked flags in scan order, and the (N,) permutation back to raster order.
    """
    b, c, *grid = feature.shape
    grid = tuple(grid)
    if tuple(masked.shape) != (b, *grid):
        raise InvalidInput(f"mask shape {tuple(masked.shape)} does not match the Mamba grid {(b, *grid)}")
    tokens = feature.flatten(2).transpose(1, 2) + stage.position_embedding(
        grid, feature.device, feature.dtype
    )
    perm, inverse = stage.scan_order(grid, feature.device)
    tokens, masked_seq = tokens[:, perm], masked.flatten(1)[:, perm]
    index = visible_token_indices(masked_seq).unsqueeze(-1).expand(-1, -1, c)
    outputs = stage.forward_sequence(tokens.gather(1, index))
    # Autocast may hand back another dtype than the tokens': scatter into the outputs' own dtype.
    sequence = outputs.new_zeros(tokens.shape).scatter(1, index, outputs)
    return sequence, masked_seq, inverse
