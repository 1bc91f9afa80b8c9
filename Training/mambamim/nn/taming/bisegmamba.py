"""BiSegMamba (Taming Mambas variant; the authors' ``PanSegMamba``): SegMamba with a forward and a reversed
scan per encoder stage.

Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3: a
causal scan lets a voxel see only voxels earlier in the order, so a second scan over the reversed sequence
gives every voxel context from both sides. As in the authors' code the two directions have separate
parameters (``fwd_mamba``, ``bwd_mamba``: Mamba + LayerNorms + projection each); outputs are summed and
layer-normed; the outer LayerNorm and ``d_state = min(C, 256)`` are SegMamba's.
"""

from __future__ import annotations

from mambamim.nn.taming.segmamba import SegMamba


class BiSegMamba(SegMamba):
    """Residual U-Net + a bidirectional Mamba scan per encoder stage; arguments as :class:`SegMamba`
    (``scan_order`` sets the forward direction, the backward direction scans it reversed).

    Example::

        net = BiSegMamba(in_channels=1, out_channels=14)
        logits = net(torch.randn(1, 1, 64, 64, 64))  # (1, 14, 64, 64, 64)
    """

    bidirectional = True
