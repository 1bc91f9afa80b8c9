"""Backend selection for the selective scan and the causal depthwise conv1d.

Two backends per op: ``"cuda"`` (the kernels of the optional ``mamba-ssm`` / ``causal-conv1d``
packages, CUDA tensors only) and ``"torch"`` (our pure-PyTorch implementation, any device).
``"auto"`` picks the kernel when it imports and the tensors live on CUDA, otherwise ``"torch"``.
The choice comes from the call's ``backend=`` argument, else ``MAMBAMIM_SCAN_BACKEND``, else auto.
Forcing a backend that cannot run is an error that says why: never a silent fallback.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Any, Callable, Optional

import torch

ENV_VAR = "MAMBAMIM_SCAN_BACKEND"
BACKENDS = ("auto", "cuda", "torch")

# op name -> (pip package, module, attribute) of the CUDA kernel entry point
_KERNELS: dict[str, tuple[str, str, str]] = {
    "selective_scan": ("mamba-ssm", "mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
    "causal_conv1d": ("causal-conv1d", "causal_conv1d", "causal_conv1d_fn"),
    "mamba_inner": ("mamba-ssm", "mamba_ssm.ops.selective_scan_interface", "mamba_inner_fn"),
}


@functools.cache
def cuda_kernel(op: str) -> tuple[Optional[Callable[..., Any]], str]:
    """``(function or None, reason)`` for the CUDA kernel of ``op``; the import is tried once."""
    package, module_name, attribute = _KERNELS[op]
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, attribute)
    except Exception as error:  # a broken CUDA build raises more than ImportError
        return None, f"{package} not usable ({type(error).__name__}: {error})"
    return function, f"{package} kernel {module_name}.{attribute} importable"


def requested_backend(backend: Optional[str] = None) -> str:
    """The backend asked for: the argument, else the environment variable, else ``"auto"``."""
    source = "backend argument" if backend is not None else f"environment variable {ENV_VAR}"
    value = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    value = value.strip().lower()
    if value not in BACKENDS:
        raise ValueError(f"{source} is {value!r}; valid values: {', '.join(BACKENDS)}")
    return value


def resolve_backend(op: str, on_cuda: bool, backend: Optional[str] = None) -> str:
    """``"cuda"`` or ``"torch"`` for one call of ``op`` on tensors that are (not) on CUDA."""
    request = requested_backend(backend)
    if request == "torch":
        return "torch"
    kernel, reason = cuda_kernel(op)
    if request == "auto":
        return "cuda" if (kernel is not None and on_cuda) else "torch"
    if kernel is None:
        raise RuntimeError(f"{op} backend 'cuda' was requested but is unavailable: {reason}")
    if not on_cuda:
        raise RuntimeError(f"{op} backend 'cuda' was requested but the input tensors are not on CUDA")
    return "cuda"


def backend_report() -> dict[str, Any]:
    """What each op runs on for CPU and for CUDA tensors under the current setting, and why."""
    try:
        request = requested_backend()
    except ValueError as error:
        request = f"error: {error}"
    has_cuda_device = torch.cuda.is_available()
    report: dict[str, Any] = {
        "requested": request,
        "env_var": ENV_VAR,
        "env_value": os.environ.get(ENV_VAR),
        "cuda_device": has_cuda_device,
    }
    for op in ("selective_scan", "causal_conv1d"):
        kernel, reason = cuda_kernel(op)
        if request.startswith("error"):
            on_cpu = on_cuda = why = request
        elif request == "torch":
            on_cpu = on_cuda = "torch"
            why = f"forced by {ENV_VAR}=torch"
        elif request == "cuda":
            on_cpu = "error (cuda forced, CPU tensors)"
            on_cuda = "cuda" if kernel is not None else f"error ({reason})"
            why = f"forced by {ENV_VAR}=cuda; {reason}"
        else:
            on_cpu = "torch"
            on_cuda = "cuda" if kernel is not None else "torch"
            why = (
                f"auto: {reason}; used for CUDA tensors"
                if kernel is not None
                else f"auto: {reason}; pure-PyTorch implementation everywhere"
            )
        report[op] = {
            "kernel_available": kernel is not None,
            "on_cpu": on_cpu,
            "on_cuda": on_cuda,
            "active": on_cuda if has_cuda_device else on_cpu,
            "reason": why,
        }
    return report
