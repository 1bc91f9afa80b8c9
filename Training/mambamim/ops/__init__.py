"""Sequence operators of the Mamba block with interchangeable CUDA-kernel, Triton and pure-PyTorch backends.

``selective_scan_fn`` and ``causal_conv1d_fn`` take mamba-ssm's / causal-conv1d's arguments plus a
keyword ``backend`` ("auto" | "cuda" | "triton" | "torch", default from ``MAMBAMIM_SCAN_BACKEND``);
``backend_report()`` says what runs where and why.
"""

from mambamim.ops.backends import BACKENDS, ENV_VAR, backend_report
from mambamim.ops.causal_conv1d import causal_conv1d_fn, causal_conv1d_torch
from mambamim.ops.selective_scan import selective_scan_fn, selective_scan_torch

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "backend_report",
    "causal_conv1d_fn",
    "causal_conv1d_torch",
    "selective_scan_fn",
    "selective_scan_torch",
]
