"""`mambamim.cpu_memory`: the command line asks PyTorch for huge pages before torch is imported, and
large tensors then fault in 2 MiB pages instead of 4 KiB ones. Each case runs a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mambamim.cpu_memory import ENV_VAR, huge_page_report

PROBE = """
import resource, sys
from mambamim.cpu_memory import use_huge_pages
if sys.argv[1] == "on":
    use_huge_pages()
import torch

before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(64 * 2**20 // 4)  # 64 MiB, freshly mapped: 16,384 pages of 4 KiB
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


SMALL_PAGE_FAULTS = 64 * 2**20 // 4096  # 16,384: a fresh 64 MiB tensor faulted in 4 KiB at a time


def _faults(mode: str, **env: str) -> int:
    environment = {k: v for k, v in os.environ.items() if k != ENV_VAR} | env
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


@pytest.mark.skipif(huge_page_report()["kernel"] not in ("always", "madvise"), reason="no huge pages")
def test_large_tensors_fault_in_huge_pages():
    assert _faults("on") < SMALL_PAGE_FAULTS // 2  # typically ~600; lenient where huge pages run short


@pytest.mark.skipif(huge_page_report()["kernel"] != "madvise", reason="only an madvise kernel tells apart")
def test_without_the_request_large_tensors_fault_in_small_pages_and_the_user_can_opt_out():
    assert _faults("off") > SMALL_PAGE_FAULTS // 2
    assert _faults("on", **{ENV_VAR: "0"}) > SMALL_PAGE_FAULTS // 2


@pytest.mark.skipif(huge_page_report()["kernel"] != "madvise", reason="only an madvise kernel tells apart")
def test_the_command_line_requests_huge_pages_before_torch_is_imported():
    """After `mambamim info` (which imports torch), a fresh large tensor still faults in huge pages:
    the request reached PyTorch in time."""
    code = (
        "import resource\n"
        "from mambamim.cli import main\n"
        "main(['info', '--json'])\n"
        "import torch\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "torch.ones(64 * 2**20 // 4)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert '"requested": true' in result.stdout
    assert int(result.stdout.split()[-1]) < SMALL_PAGE_FAULTS // 2
