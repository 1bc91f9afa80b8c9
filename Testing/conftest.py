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


# Tiny networks shared by several test files: every code path of the full-size ones, in seconds on a CPU.
TINY_HYMAMBA = {"channels": (4, 8, 8, 12, 12), "blocks": (1, 1, 2, 1, 1), "expansion": (2, 2, 2, 2, 2),
                "mamba_depth": 2, "d_state": 4, "out_channels": 3}  # fmt: skip
TINY_MIM_ENCODER = {"channels": [4, 6, 8, 8, 12], "blocks": [1, 1, 1, 1, 1], "expansion": [2, 2, 2, 2, 2],
                    "mamba_depth": 1, "d_state": 4}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_hymamba() -> dict:
    """Constructor arguments of a tiny HyMamba with 3 classes (not to be modified: copy with ``{**...}``)."""
    return TINY_HYMAMBA


@pytest.fixture(scope="session")
def tiny_hymamba_encoder() -> dict:
    """The same network's ``HyMambaEncoder`` arguments."""
    return {k: v for k, v in TINY_HYMAMBA.items() if k != "out_channels"}


@pytest.fixture(scope="session")
def tiny_mim_encoder() -> dict:
    """``encoder_config`` of a tiny MambaMIM (not to be modified)."""
    return TINY_MIM_ENCODER


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared test data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def sample_ct(data_dir: Path) -> Path:
    return data_dir / "ct_abdomen" / "ct.nii.gz"


@pytest.fixture
def small_ct(sample_ct: Path, tmp_path: Path) -> Path:
    """The sample CT at 6 mm (61x51x56): small enough for many runs."""
    from mambamim.data.imageio import read_image, write_image

    return write_image(read_image(sample_ct)[::2, ::2, ::2], tmp_path / "inputs" / "ct.nii.gz")


@pytest.fixture
def threshold_pkg(tmp_path: Path, monkeypatch) -> Path:
    """A package of the intensity-threshold stand-in network at 6 mm (``infer_helpers``): exact labels."""
    from infer_helpers import make_threshold_package, register_threshold_model

    register_threshold_model(monkeypatch)
    return make_threshold_package(tmp_path / "pkg", spacing=(6.0, 6.0, 6.0))


@pytest.fixture
def liver_dataset(tmp_path: Path, data_dir: Path) -> Path:
    """The sample CT with its liver label (BTCV value 6) as a 2-class, one-case task: learnable in a few
    dozen steps; validation runs on the training scan."""
    import json

    import nibabel as nib
    import numpy as np

    folder = data_dir / "ct_abdomen"
    btcv = nib.load(folder / "ct_labels_btcv13.nii.gz")
    liver = (np.asarray(btcv.dataobj) == 6).astype(np.uint8)
    nib.save(nib.Nifti1Image(liver, btcv.affine), tmp_path / "liver.nii.gz")
    path = tmp_path / "dataset.json"
    pair = {"image": str(folder / "ct.nii.gz"), "label": str(tmp_path / "liver.nii.gz")}
    path.write_text(json.dumps({"labels": {"0": "background", "1": "liver"}, "training": [pair]}))
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    if torch is not None:
        torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and (torch is None or not torch.cuda.is_available()):
            item.add_marker(skip_cuda)
