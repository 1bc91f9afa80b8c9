"""Fixtures for the Slicer-module tests: an app-less MRML scene (slicer-core) with the Volumes,
Segmentations, Terminologies and Subject Hierarchy logics wired to an application logic, the
sample CT as a volume node (full size and a small crop), and a model package for the engine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the Slicer module tests")
vtk = pytest.importorskip("vtk")

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "MambaMIMSegmenter"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

DEMO_PACKAGE = ROOT / "Resources" / "models" / "btcv-hymamba-demo"
# The interpreter that runs the engine's child processes: this one, unless the tests run on a Python
# without torch (the Python 3.12 environment, see the Makefile), where it names one that has it.
ENGINE_PYTHON = os.environ.get("MAMBAMIM_TEST_ENGINE_PYTHON") or sys.executable


class HeadlessSlicer:
    """The logics Slicer's application would create, minus Qt."""

    def __init__(self) -> None:
        from vtkmodules.vtkCommonCore import vtkCollection

        self.scene = slicer.vtkMRMLScene()
        self.appLogic = slicer.vtkSlicerApplicationLogic()
        self.appLogic.SetMRMLScene(self.scene)
        self.appLogic.SetSliceLogics(vtkCollection())
        self.appLogic.SetViewLogics(vtkCollection())
        self.colorLogic = slicer.vtkMRMLColorLogic()
        self.colorLogic.SetMRMLApplicationLogic(self.appLogic)
        self.colorLogic.SetMRMLScene(self.scene)
        self.appLogic.SetModuleLogic("Colors", self.colorLogic)
        self.volumesLogic = slicer.vtkSlicerVolumesLogic()
        self.volumesLogic.SetMRMLApplicationLogic(self.appLogic)
        self.volumesLogic.SetMRMLScene(self.scene)
        self.appLogic.SetModuleLogic("Volumes", self.volumesLogic)
        self.segmentationsLogic = slicer.vtkSlicerSegmentationsModuleLogic()
        self.segmentationsLogic.SetMRMLApplicationLogic(self.appLogic)
        self.segmentationsLogic.SetMRMLScene(self.scene)
        self.appLogic.SetModuleLogic("Segmentations", self.segmentationsLogic)
        self.subjectHierarchyLogic = slicer.vtkSlicerSubjectHierarchyModuleLogic()
        self.subjectHierarchyLogic.SetMRMLApplicationLogic(self.appLogic)
        self.subjectHierarchyLogic.SetMRMLScene(self.scene)

    def loadVolume(self, path: Path, name: str):
        node = self.volumesLogic.AddArchetypeVolume(str(path), name, 0)
        assert node is not None, f"could not load {path}"
        return node

    def addVolumeFromArray(
        self, array: np.ndarray, ijkToRas: np.ndarray, name: str, nodeClass="vtkMRMLScalarVolumeNode"
    ):
        """A volume node from a (K, J, I[, components]) array and a 4×4 IJK-to-RAS matrix."""
        from vtk.util import numpy_support

        image = vtk.vtkImageData()
        image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
        components = array.shape[3] if array.ndim == 4 else 1
        flat = np.ascontiguousarray(array).reshape(-1, components) if components > 1 else array.reshape(-1)
        image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(flat), deep=True))
        node = self.scene.AddNewNodeByClass(nodeClass, name)
        node.SetAndObserveImageData(image)
        matrix = vtk.vtkMatrix4x4()
        for i in range(4):
            for j in range(4):
                matrix.SetElement(i, j, float(ijkToRas[i, j]))
        node.SetIJKToRASMatrix(matrix)
        node.CreateDefaultDisplayNodes()
        return node

    def nodeIds(self) -> set[str]:
        return {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}


@pytest.fixture
def app() -> HeadlessSlicer:
    return HeadlessSlicer()


@pytest.fixture
def logic(app, tmp_path):
    """The module's logic on the real registry, with its own model cache and temporary folder."""
    from MambaMIMSegmenterLib import ModelRegistry, SegmenterLogic

    registry = ModelRegistry(ROOT / "Resources" / "models.json", tmp_path / "cache")
    return SegmenterLogic(
        scene=app.scene, registry=registry, python=ENGINE_PYTHON, tempRoot=tmp_path / "tmp"
    )


def ijkToRasOf(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])


def volumeArray(node) -> np.ndarray:
    from vtk.util import numpy_support

    image = node.GetImageData()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])


def segmentArray(segmentationNode, segmentId) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(voxels (K, J, I), image-to-world 4×4, extent) of one segment's binary labelmap."""
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    assert segmentationNode.GetBinaryLabelmapRepresentation(segmentId, image)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])
    return array, np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)]), image.GetExtent()


@pytest.fixture
def ct_node(app, sample_ct):
    return app.loadVolume(sample_ct, "ct")


@pytest.fixture
def small_ct_node(app, sample_ct):
    """A 48×40×32 crop around the abdomen centre, keeping the file's spacing and direction."""
    full = app.loadVolume(sample_ct, "ct full")
    array = volumeArray(full)
    k0, j0, i0 = (s // 2 - n // 2 for s, n in zip(array.shape, (32, 40, 48)))
    crop = array[k0 : k0 + 32, j0 : j0 + 40, i0 : i0 + 48]
    matrix = ijkToRasOf(full)
    matrix[:3, 3] = matrix[:3, :3] @ np.array([i0, j0, k0]) + matrix[:3, 3]
    node = app.addVolumeFromArray(crop, matrix, "ct small")
    app.scene.RemoveNode(full)
    return node


@pytest.fixture(scope="session")
def demo_package() -> Path:
    """The shipped demo package (Resources/models): real organs, for tests of what a clinician sees."""
    if not (DEMO_PACKAGE / "model.json").is_file():
        pytest.skip(f"the shipped demo package {DEMO_PACKAGE} is missing")
    return DEMO_PACKAGE


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    """A tiny, randomly initialised HyMamba package with the BTCV labels: fast, for the logic's plumbing
    (its segmentations are noise)."""
    import json

    import torch
    from mambamim.infer.package import make_card, save_package
    from mambamim.nn.registry import build_model

    torch.manual_seed(0)
    labels_file = ROOT.parent / "shared" / "data" / "ct_abdomen" / "labels_btcv13.json"
    labels = (
        json.loads(labels_file.read_text())
        if labels_file.is_file()
        else {str(i): f"organ {i}" for i in range(1, 14)}
    )
    config = {
        "in_channels": 1,
        "out_channels": 14,
        "channels": (8, 8, 16, 16, 16),
        "blocks": (1, 1, 1, 1, 1),
        "expansion": (1, 1, 1, 1, 1),
        "mamba_depth": 1,
    }
    model = build_model("hymamba", **config)
    card = make_card(
        name="tiny-test",
        labels=labels,
        modality="CT",
        spacing=(3.0, 3.0, 3.0),
        intensity={"type": "window", "lower": -175.0, "upper": 250.0},
        roi_size=(32, 32, 32),
    )
    return save_package(
        tmp_path_factory.mktemp("pkg") / "tiny",
        model_name="hymamba",
        model_config=config,
        state_dict=model.state_dict(),
        card=card,
    )


DEMO_CHECKPOINT_DIR = ROOT / "Resources" / "models" / "mambamim-demo"


@pytest.fixture(scope="session")
def mim_checkpoint(tmp_path_factory) -> Path:
    """The shipped MambaMIM demo checkpoint when present, else a tiny freshly initialised one."""
    shipped = sorted(p for p in DEMO_CHECKPOINT_DIR.glob("*") if p.suffix in (".pt", ".pth", ".ckpt"))
    if shipped:
        return shipped[0]
    import torch
    from mambamim.checkpoint import save_checkpoint
    from mambamim.mim.model import MambaMIM

    torch.manual_seed(0)
    config = {
        "encoder_config": {
            "channels": (8, 8, 16, 16, 16),
            "blocks": (1, 1, 1, 1, 1),
            "expansion": (1, 1, 1, 1, 1),
            "mamba_depth": 1,
        }
    }
    model = MambaMIM(**config)
    payload = {
        "format": "mambamim-pretrain",
        "format_version": 1,
        "config": {"model": config, "training": {"spacing": [3.0, 3.0, 3.0], "roi": 32}},
        "model": model.state_dict(),
        "step": 0,
        "epoch": 0,
    }
    return save_checkpoint(tmp_path_factory.mktemp("mim") / "tiny-mambamim.pt", payload)
