"""SegMambaSkip (Taming Mambas variant): Mamba layers in the skip connections instead of the main path.

Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3, as
their ``SegMambaSkip``: the encoder is a plain residual encoder; each stage's output is passed on unchanged
to the next stage, while the copy sent to the decoder (the skip, and the bottleneck the decoder starts
from) goes through a bidirectional voxel-level Mamba layer first (outer LayerNorm, ``d_state = min(C, 256)``).
"""

from __future__ import annotations

from mambamim.nn.taming.bisegmamba import BiSegMamba


class SegMambaSkip(BiSegMamba):
    """Residual U-Net whose skip connections (and bottleneck output) pass through a bidirectional Mamba
    layer; arguments as :class:`~mambamim.nn.taming.segmamba.SegMamba`.

    Example::

        net = SegMambaSkip(in_channels=1, out_channels=14)
        logits = net(torch.randn(1, 1, 64, 64, 64))  # (1, 14, 64, 64, 64)
    """

    mamba_in_skips = True
