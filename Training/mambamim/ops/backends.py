"""Backend selection for the selective scan and the causal depthwise conv1d.

Backends: ``"cuda"`` (the kernels of the optional ``mamba-ssm`` / ``causal-conv1d`` packages, CUDA
tensors only), ``"triton"`` (our Triton selective scan, :mod:`mambamim.ops.selective_scan_triton`: CUDA
tensors, or CPU tensors under Triton's interpreter, ``TRITON_INTERPRET=1``) and ``"torch"`` (our
pure-PyTorch implementation, any device). Only the selective scan has a Triton kernel: under
``"triton"`` the causal conv1d runs on ``"torch"`` (cuDNN's conv1d on a GPU).
``"auto"`` picks, for CUDA tensors, the mamba-ssm kernel when it imports, else the Triton scan when
Triton imports, else ``"torch"``; CPU tensors always run on ``"torch"``.
The choice comes from the call's ``backend=`` argument, else ``MAMBAMIM_SCAN_BACKEND``, else auto.
Forcing a backend that cannot run is an error that says why: never a silent fallback.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Any, Callable

import torch

from mambamim.errors import Unavailable

ENV_VAR = "MAMBAMIM_SCAN_BACKEND"
BACKENDS = ("auto", "cuda", "triton", "torch")
TRITON_OPS = ("selective_scan",)  # ops with a Triton kernel

# op name -> (pip package, module, attribute) of the CUDA kernel entry point
_KERNELS: dict[str, tuple[str, str, str]] = {
    "selective_scan": ("mamba-ssm", "mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
    "causal_conv1d": ("causal-conv1d", "causal_conv1d", "causal_conv1d_fn"),
    "mamba_inner": ("mamba-ssm", "mamba_ssm.ops.selective_scan_interface", "mamba_inner_fn"),
}


@functools.cache
def cuda_kernel(op: str) -> tuple[Callable[..., Any] | None, str]:
    """``(function or None, reason)`` for the CUDA kernel of ``op``; the import is tried once."""
    package, module_name, attribute = _KERNELS[op]
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, attribute)
    except Exception as error:  # a broken CUDA build raises more than ImportError
        return None, f"{package} not usable ({type(error).__name__}: {error})"
    return function, f"{package} kernel {module_name}.{attribute} importable"


@functools.cache
def triton_scan() -> tuple[Callable[..., Any] | None, str]:
    """``(selective_scan_triton or None, reason)``; imports Triton (and compiles nothing) once."""
    try:
        module = importlib.import_module("mambamim.ops.selective_scan_triton")
    except Exception as error:  # Triton missing, or a build that does not match this torch
        return None, f"triton not usable ({type(error).__name__}: {error})"
    import triton

    return module.selective_scan_triton, f"triton {triton.__version__} importable (kernels built at run time)"


def triton_interpreter() -> bool:
    """Whether Triton's interpreter is on: it runs the kernels on CPU tensors (tests only; slow)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() == "1"


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for: the argument, else the environment variable, else ``"auto"``."""
    source = "backend argument" if backend is not None else f"environment variable {ENV_VAR}"
    value = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    value = value.strip().lower()
    if value not in BACKENDS:
        raise ValueError(f"{source} is {value!r}; valid values: {', '.join(BACKENDS)}")
    return value


def resolve_backend(op: str, on_cuda: bool, backend: str | None = None) -> str:
    """``"cuda"``, ``"triton"`` or ``"torch"`` for one call of ``op`` on tensors that are (not) on CUDA."""
    request = requested_backend(backend)
    if request == "torch" or (request == "triton" and op not in TRITON_OPS):
        return "torch"
    if request == "triton":
        function, reason = triton_scan()
        if function is None:
            raise Unavailable(f"{op} backend 'triton' was requested but is unavailable: {reason}")
        if not (on_cuda or triton_interpreter()):
            raise Unavailable(
                f"{op} backend 'triton' was requested but the input tensors are not on CUDA "
                "(Triton runs CPU tensors only under its interpreter, TRITON_INTERPRET=1)"
            )
        return "triton"
    kernel, reason = cuda_kernel(op)
    if request == "auto":
        if not on_cuda:
            return "torch"
        if kernel is not None:
            return "cuda"
        return "triton" if op in TRITON_OPS and triton_scan()[0] is not None else "torch"
    if kernel is None:
        raise Unavailable(f"{op} backend 'cuda' was requested but is unavailable: {reason}")
    if not on_cuda:
        raise Unavailable(f"{op} backend 'cuda' was requested but the input tensors are not on CUDA")
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
        triton_fn, triton_reason = triton_scan() if op in TRITON_OPS else (None, "no Triton kernel")
        if request.startswith("error"):
            on_cpu = on_cuda = why = request
        elif request == "torch":
            on_cpu = on_cuda = "torch"
            why = f"forced by {ENV_VAR}=torch"
        elif request == "triton" and op not in TRITON_OPS:
            on_cpu = on_cuda = "torch"
            why = f"{ENV_VAR}=triton: {op} has no Triton kernel, pure-PyTorch implementation"
        elif request == "triton":
            on_cpu = "triton (interpreter)" if triton_interpreter() else "error (triton forced, CPU tensors)"
            on_cuda = "triton" if triton_fn is not None else f"error ({triton_reason})"
            why = f"forced by {ENV_VAR}=triton; {triton_reason}"
        elif request == "cuda":
            on_cpu = "error (cuda forced, CPU tensors)"
            on_cuda = "cuda" if kernel is not None else f"error ({reason})"
            why = f"forced by {ENV_VAR}=cuda; {reason}"
        else:
            on_cpu = "torch"
            if kernel is not None:
                on_cuda, why = "cuda", f"auto: {reason}; used for CUDA tensors"
            elif triton_fn is not None:
                on_cuda, why = "triton", f"auto: {reason}; {triton_reason}: Triton scan for CUDA tensors"
            else:
                on_cuda = "torch"
                why = f"auto: {reason}; {triton_reason}; pure-PyTorch implementation everywhere"
        report[op] = {
            "kernel_available": kernel is not None,
            "on_cpu": on_cpu,
            "on_cuda": on_cuda,
            "active": on_cuda if has_cuda_device else on_cpu,
            "reason": why,
        }
    return report
