"""What every benchmark's JSON records about the machine it ran on (no paths of that machine)."""

from __future__ import annotations

import platform

import torch


def environment_meta() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
