"""`mambamim info`: versions, devices, and which scan / conv backends run where and why."""

from __future__ import annotations

import argparse
import json

HELP = "Print versions, devices and the active selective-scan / conv1d backends."

# distribution names, looked up in the installed metadata (no import: some are slow or CUDA-bound;
# whether the CUDA kernels actually import is part of the backend report)
OPTIONAL_PACKAGES = (
    "mamba-ssm",
    "causal-conv1d",
    "triton",
    "safetensors",
    "SimpleITK",
    "nibabel",
    "pydicom",
    "pynrrd",
    "tensorboard",
    "slicer-core",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _version(distribution: str):
    """Installed version of a distribution, or None when it is not installed."""
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _devices() -> dict:
    import torch

    cuda = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            cuda.append(
                {
                    "index": index,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 2),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
    mps = getattr(torch.backends, "mps", None)
    return {
        "cpu_threads": torch.get_num_threads(),
        "cuda_build": torch.version.cuda,
        "cuda": cuda,
        "mps": bool(mps is not None and mps.is_available()),
    }


def collect() -> dict:
    """Everything `info` prints, as a JSON-serialisable dict."""
    import platform

    import numpy
    import torch

    from mambamim import __version__
    from mambamim.cpu_memory import huge_page_report
    from mambamim.ops import backend_report

    return {
        "versions": {
            "mambamim": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "monai": _version("monai"),
            "numpy": numpy.__version__,
        },
        "platform": platform.platform(),
        "devices": _devices(),
        "huge_pages": huge_page_report(),
        "backends": backend_report(),
        "optional_packages": {name: _version(name) for name in OPTIONAL_PACKAGES},
    }


def _format(info: dict) -> str:
    lines = ["Versions:"]
    lines += [f"  {name:<10} {version}" for name, version in info["versions"].items()]
    lines.append(f"Platform:    {info['platform']}")
    devices = info["devices"]
    lines.append("Devices:")
    lines.append(f"  cpu        {devices['cpu_threads']} torch threads")
    if devices["cuda"]:
        for gpu in devices["cuda"]:
            lines.append(
                f"  cuda:{gpu['index']}     {gpu['name']}, {gpu['memory_gib']} GiB, "
                f"compute capability {gpu['capability']}"
            )
    else:
        build = devices["cuda_build"] or "none (CPU-only torch build)"
        lines.append(f"  cuda       no device available (torch CUDA build: {build})")
    lines.append(f"  mps        {'available' if devices['mps'] else 'not available'}")
    pages = info["huge_pages"]
    asked = "requested" if pages["requested"] else "not requested"
    lines.append(f"Huge pages:  {asked} for large CPU tensors (kernel setting: {pages['kernel']})")
    backends = info["backends"]
    setting = f"{backends['env_var']}={backends['env_value'] or '<unset>'}"
    lines.append(f"Backends ({setting}, using {backends['requested']}):")
    for op in ("selective_scan", "causal_conv1d"):
        entry = backends[op]
        where = f"CPU tensors: {entry['on_cpu']}, CUDA tensors: {entry['on_cuda']}"
        lines.append(f"  {op:<15} active: {entry['active']} ({where})")
        lines.append(f"  {'':<15} why: {entry['reason']}")
    lines.append("Optional packages:")
    for name, version in info["optional_packages"].items():
        lines.append(f"  {name:<14} {version or 'not installed'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = collect()
    print(json.dumps(info, indent=2) if args.json else _format(info))
    return 0
