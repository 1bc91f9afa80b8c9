"""Shared fixtures: the real scans in ../shared/data and deterministic torch settings."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    import torch
except ModuleNotFoundError:  # the Python 3.12 environment (Makefile: test312) has no torch
    torch = None

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared test data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def sample_ct(data_dir: Path) -> Path:
    return data_dir / "ct_abdomen" / "ct.nii.gz"


@pytest.fixture(autouse=True)
def _seed() -> None:
    if torch is not None:
        torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and (torch is None or not torch.cuda.is_available()):
            item.add_marker(skip_cuda)
