"""End-to-end: volume node → child process `mambamim segment` → segmentation node, on real MRML.

The child process is real (``python -m mambamim segment --progress json``) and so is the model
package (the built-in demo, or a tiny HyMamba package when the demo is not built yet)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import slicer
from conftest import DEMO_PACKAGE, ENGINE_PYTHON, ijkToRasOf, segmentArray, volumeArray
from MambaMIMSegmenterLib import (
    EngineCancelled,
    EngineError,
    InputError,
    ModelRegistry,
    SegmenterLogic,
)
from MambaMIMSegmenterLib.registry import readCard

ROOT = Path(__file__).resolve().parents[2]



def _segments(segmentationNode) -> list:
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]


def _assert_on_volume_grid(segmentationNode, volumeNode, card):
    segments = _segments(segmentationNode)
    assert [s.GetName() for s in segments] == [label["name"] for label in card["labels"]]
    for segment, label in zip(segments, card["labels"]):
        assert np.allclose(segment.GetColor(), np.array(label["color"]) / 255.0)
    dims = volumeNode.GetImageData().GetDimensions()
    union = np.zeros(dims[::-1], dtype=np.int32)
    for index in range(len(segments)):
        segment_id = segmentationNode.GetSegmentation().GetNthSegmentID(index)
        array, matrix, extent = segmentArray(segmentationNode, segment_id)
        # Exact geometry: same extent and the same IJK-to-RAS matrix as the input volume.
        assert extent == (0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
        assert np.allclose(matrix, ijkToRasOf(volumeNode), atol=1e-5)
        assert set(np.unique(array).tolist()) <= {0, 1}
        union += array
    assert union.max() <= 1, "segments of one label map never overlap"
    assert segmentationNode.GetNodeReferenceID("referenceImageGeometryRef") == volumeNode.GetID()


# The one full-size run (the whole sample CT through the real engine); everything else uses a crop.
@pytest.mark.slow
def test_segments_the_sample_ct_with_names_colours_and_exact_geometry(
    app, logic, ct_node, demo_package, tmp_path
):
    card = readCard(demo_package)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(app.scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Anonymous")
    study = sh.CreateStudyItem(patient, "Abdomen CT")
    sh.SetItemParent(sh.GetItemByDataNode(ct_node) or sh.CreateItem(study, ct_node), study)
    events = []
    # The shipped demo is addressed by its registry id, as users do from the Python console.
    model = "btcv-hymamba-demo" if demo_package == DEMO_PACKAGE else demo_package
    segmentation = logic.segment(ct_node, model, "cpu", fast=True, onProgress=events.append)
    assert segmentation.GetScene() is app.scene and segmentation.GetName() == "ct segmentation"
    _assert_on_volume_grid(segmentation, ct_node, card)
    assert sh.GetItemParent(sh.GetItemByDataNode(segmentation)) == study
    assert events and events[-1].stage == "done"
    assert all(0.0 <= e.fraction <= 1.0 for e in events)
    assert not any((tmp_path / "tmp").iterdir()), "temporary files were left behind"


def _oblique_lps_matrix(spacing=(2.5, 3.0, 3.5), angle_deg=20.0):
    """IJK-to-RAS of an LPS-ordered (I→left, J→posterior) volume rotated 20° about the S axis."""
    a = math.radians(angle_deg)
    rotation = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    lps = np.diag([-1.0, -1.0, 1.0])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ lps @ np.diag(spacing)
    matrix[:3, 3] = (31.5, -12.25, 80.0)
    return matrix


def test_oblique_lps_transformed_volume_into_an_existing_segmentation(
    app, logic, small_ct_node, demo_package
):
    card = readCard(demo_package)
    array = volumeArray(small_ct_node).copy()
    volume = app.addVolumeFromArray(array, _oblique_lps_matrix(), "oblique")
    transform = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    existing = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my segmentation")
    existing.CreateDefaultDisplayNodes()
    existing.GetSegmentation().AddEmptySegment("old", "old segment")
    before = app.nodeIds()
    result = logic.segment(volume, demo_package, "cpu", fast=True, outputSegmentationNode=existing)
    assert result is existing
    assert existing.GetTransformNodeID() == transform.GetID(), "segments live in the input's coordinates"
    assert app.nodeIds() == before, "filling an existing segmentation must not add nodes"
    _assert_on_volume_grid(existing, volume, card)


def test_cancel_leaves_no_node_and_no_files(app, logic, small_ct_node, demo_package, tmp_path):
    before = app.nodeIds()
    job = logic.segment(small_ct_node, demo_package, "cpu", waitForCompletion=False)
    assert job.workDir.is_dir() and (job.workDir / "input.nrrd").is_file()
    assert job.poll() is False  # non-blocking: returns at once while the child runs
    job.cancel()
    assert job.finished and isinstance(job.error, EngineCancelled)
    assert job.runner.process.poll() is not None
    assert app.nodeIds() == before
    assert not job.workDir.exists()
    with pytest.raises(EngineCancelled):
        job.wait()
    # A script's blocking wait that times out (or is interrupted) stops the child the same way.
    job = logic.segment(small_ct_node, demo_package, "cpu", waitForCompletion=False)
    with pytest.raises(TimeoutError, match="it was stopped"):
        job.wait(timeout=0.2)
    assert job.runner.process.poll() is not None and not job.workDir.exists()
    assert app.nodeIds() == before


@pytest.fixture
def crashing_engine(tmp_path) -> str:
    """A `mambamim` package whose command line dies mid-run, as a native crash or OOM kill would."""
    package = tmp_path / "crash" / "mambamim"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import json, os, sys\n"
        "event = {'stage': 'inference', 'fraction': 0.3, 'eta_s': 5, 'message': 'window 3/9'}\n"
        "print(json.dumps(event), flush=True)\n"
        "print('Segmentation fault (simulated)', file=sys.stderr, flush=True)\n"
        "os._exit(139)\n"
    )
    return str(package.parent)


def test_crashed_child_gives_a_clear_error_and_leaves_nothing(
    app, small_ct_node, demo_package, tmp_path, crashing_engine
):
    registry = ModelRegistry(ROOT / "Resources" / "models.json", tmp_path / "cache")
    logic = SegmenterLogic(
        scene=app.scene,
        registry=registry,
        python=ENGINE_PYTHON,
        enginePaths=[crashing_engine],
        tempRoot=tmp_path / "tmp",
    )
    before = app.nodeIds()
    with pytest.raises(EngineError, match=r"(?s)exit code 139.*Segmentation fault \(simulated\)"):
        logic.segment(small_ct_node, demo_package, "cpu")
    assert app.nodeIds() == before
    assert not any((tmp_path / "tmp").iterdir())


def test_engine_error_is_reported(app, logic, small_ct_node, demo_package, tmp_path):
    """A package whose weights were replaced: the real engine refuses it and says why."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(demo_package, broken)
    card = readCard(broken)
    (broken / card["weights"]["file"]).write_bytes(b"not the weights")
    before = app.nodeIds()
    with pytest.raises(EngineError, match=r"(?i)sha-?256|corrupt"):
        logic.segment(small_ct_node, broken, "cpu", fast=True)
    assert app.nodeIds() == before


def test_bad_inputs_are_refused_before_anything_starts(
    app, logic, small_ct_node, demo_package, data_dir, tmp_path
):
    before = app.nodeIds()
    array = volumeArray(small_ct_node)
    flat = app.addVolumeFromArray(array[:1].copy(), np.diag([3.0, 3.0, 3.0, 1.0]), "one slice")
    labels = app.addVolumeFromArray(
        (array > 0).astype(np.uint8),
        np.diag([3.0, 3.0, 3.0, 1.0]),
        "labels",
        nodeClass="vtkMRMLLabelMapVolumeNode",
    )
    rgb = app.addVolumeFromArray(
        np.stack([array] * 3, axis=-1).reshape(*array.shape, 3),
        np.diag([3.0, 3.0, 3.0, 1.0]),
        "rgb",
        nodeClass="vtkMRMLVectorVolumeNode",
    )
    frames = app.addVolumeFromArray(
        np.stack([array] * 4, axis=-1), np.diag([3.0, 3.0, 3.0, 1.0]), "time series"
    )
    mr = app.loadVolume(data_dir / "ct_abdomen" / "mr.nii.gz", "mr")
    created = app.nodeIds() - before
    cases = [
        (None, "No input volume is selected"),
        (flat, '"one slice" is 2-D'),
        (labels, '"labels" is a label map'),
        (rgb, "not a scalar volume"),
        (frames, '"time series" has 4 components per voxel \\(a 4-D'),
        (mr, r"is for CT images, but \"mr\" looks like MR"),
    ]
    for node, message in cases:
        with pytest.raises(InputError, match=message):
            logic.segment(node, demo_package, "cpu")
    with pytest.raises(InputError, match="device must be one of auto, cuda, cpu"):
        logic.segment(small_ct_node, demo_package, "gpu")
    with pytest.raises(InputError, match=r"overlap must be in \[0, 1\)"):
        logic.segment(small_ct_node, demo_package, "cpu", overlap=1.5)
    assert app.nodeIds() - before == created, "a refused input must not add nodes"
    assert not (tmp_path / "tmp").exists() or not any((tmp_path / "tmp").iterdir())
