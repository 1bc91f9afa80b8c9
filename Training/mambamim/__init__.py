"""MambaMIM: self-supervised pre-training and HyMamba / Taming-Mambas segmentation for 3-D medical images.

The package never imports Slicer, Qt or VTK; it is importable with torch, numpy and MONAI alone.
"""

__version__ = "0.1.0"
