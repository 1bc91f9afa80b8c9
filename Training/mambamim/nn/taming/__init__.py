"""Taming-Mambas segmentation networks (Lumetti et al., arXiv 2410.15496) on a shared residual U-Net."""

from mambamim.nn.taming.bisegmamba import BiSegMamba
from mambamim.nn.taming.multisegmamba import MultiSegMamba
from mambamim.nn.taming.segmamba import SegMamba
from mambamim.nn.taming.segmambaskip import SegMambaSkip

__all__ = ["BiSegMamba", "MultiSegMamba", "SegMamba", "SegMambaSkip"]
