"""BiSegMamba (Taming-Mambas variant): SegMamba with a forward and a reversed scan per encoder stage.

Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3: a
causal scan lets a voxel see only voxels earlier in the order, so a second scan over the reversed sequence
gives every voxel context from both sides. As in the authors' code, the two directions have separate
parameters (Mamba + LayerNorms + projection each); outputs are summed and layer-normed. The forward
direction has exactly SegMamba's parameter names, so a SegMamba state dict loads into BiSegMamba with only
the backward keys missing.
"""

from __future__ import annotations

from mambamim.nn.taming.segmamba import SegMamba


class BiSegMamba(SegMamba):
    """Residual U-Net + a bidirectional Mamba scan per encoder stage; arguments as :class:`SegMamba`
    (``scan_order`` sets the forward direction, the backward direction scans it reversed)."""

    bidirectional = True
