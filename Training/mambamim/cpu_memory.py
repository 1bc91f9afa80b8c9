"""Back large CPU tensors with transparent huge pages (PyTorch's ``THP_MEM_ALLOC_ENABLE``).

glibc serves every block above 32 MiB with a fresh ``mmap`` and returns it to the kernel on ``free``, so
each new full-size activation map of a 3-D network is faulted in page by page: a 96³ × 64 float map
is 226 MB, 55,000 faults of 4 KiB. On the 2-core test machine huge pages took a 96³ HyMamba forward
from 12.6 s to 11.5 s. With ``THP_MEM_ALLOC_ENABLE=1`` PyTorch aligns large tensors to 2 MiB and asks the
kernel for huge pages, 512 times fewer faults; memory still goes back to the system when freed.

PyTorch reads the variable once, at its first allocation, so it only works if set before ``import
torch``: the ``mambamim`` command line does that first thing (:func:`use_huge_pages`), and so does the
Slicer module's child process, which runs the command line. Setting ``THP_MEM_ALLOC_ENABLE=0`` in the
environment keeps it off. Kernels whose huge pages are ``never`` (or non-Linux systems) ignore it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "THP_MEM_ALLOC_ENABLE"
KERNEL_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def use_huge_pages() -> bool:
    """Ask PyTorch for huge-page-backed large tensors unless the environment says otherwise or torch is
    already imported (too late to change); True when the setting is in effect for this process."""
    if "torch" not in sys.modules:
        os.environ.setdefault(ENV_VAR, "1")
    return os.environ.get(ENV_VAR) == "1"


def huge_page_report() -> dict:
    """``{"requested": bool, "kernel": "always" | "madvise" | "never" | "unknown"}`` for ``mambamim info``."""
    try:
        text = KERNEL_SETTING.read_text()
        kernel = text[text.index("[") + 1 : text.index("]")]
    except (OSError, ValueError):
        kernel = "unknown"
    return {"requested": os.environ.get(ENV_VAR) == "1", "kernel": kernel}


def format_bytes(n: float) -> str:
    """A byte count for people: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
