"""Result import without the engine: label map file → segmentation node; reconstruction layout."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from conftest import ijkToRasOf, segmentArray
from MambaMIMSegmenterLib.results import (
    addSegmentation,
    buildSegmentation,
    comparisonLayoutXml,
    terminologyString,
)
from MambaMIMSegmenterLib.volumeio import readVolume, writeVolume

LABELS = [
    {
        "value": 1,
        "name": "liver",
        "color": [221, 130, 101],
        "snomed": {"code": "10200004", "meaning": "Liver"},
    },
    {"value": 2, "name": "spleen", "color": [157, 108, 162], "snomed": "78961009"},
    {"value": 3, "name": "left kidney", "color": [185, 102, 83]},
]


def _oblique(angle=25.0):
    a = np.radians(angle)
    matrix = np.eye(4)
    matrix[:3, :3] = np.array([[-np.cos(a), np.sin(a), 0], [-np.sin(a), -np.cos(a), 0], [0, 0, 1]]) @ np.diag(
        [2.0, 2.5, 3.0]
    )
    matrix[:3, 3] = (12.0, -7.5, 40.0)
    return matrix


@pytest.fixture
def labels_array():
    labels = np.zeros((12, 14, 16), np.uint8)
    labels[2:6, 3:9, 4:10] = 1
    labels[7:10, 2:5, 10:14] = 2
    return labels


def test_label_map_file_round_trip_is_voxel_exact(app, tmp_path, labels_array):
    volume = app.addVolumeFromArray(np.full(labels_array.shape, -900, np.int16), _oblique(), "scan")
    label_node = app.addVolumeFromArray(
        labels_array, _oblique(), "labels", nodeClass="vtkMRMLLabelMapVolumeNode"
    )
    path = writeVolume(label_node, tmp_path / "labels.nrrd")
    app.scene.RemoveNode(label_node)
    before = app.nodeIds()
    segmentation = buildSegmentation(readVolume(path, labelmap=True), LABELS, volume)
    assert app.nodeIds() == before, "the segmentation is built outside the scene"
    segmentation = addSegmentation(segmentation, volume, app.scene)
    assert segmentation.GetName() == "scan segmentation"
    seg = segmentation.GetSegmentation()
    assert [seg.GetNthSegmentID(i) for i in range(3)] == ["liver", "spleen", "left_kidney"]
    for label in LABELS:
        array, matrix, _ = segmentArray(segmentation, label["name"].replace(" ", "_"))
        assert np.allclose(matrix, ijkToRasOf(volume))
        np.testing.assert_array_equal(array, labels_array == label["value"])  # the empty kidney too
    assert "SCT^10200004^Liver" in seg.GetSegment("liver").GetTerminology()
    assert "SCT^78961009^spleen" in seg.GetSegment("spleen").GetTerminology()
    assert (
        "^Tissue~" in seg.GetSegment("left_kidney").GetTerminology()
    )  # Slicer's default: no code in the card


def test_wrong_grid_or_unknown_values_are_refused(app, tmp_path, labels_array):
    volume = app.addVolumeFromArray(np.zeros(labels_array.shape, np.int16), _oblique(), "scan")
    shifted = _oblique()
    shifted[:3, 3] += 0.5
    moved = app.addVolumeFromArray(labels_array, shifted, "moved", nodeClass="vtkMRMLLabelMapVolumeNode")
    with pytest.raises(ValueError, match="different geometry"):
        buildSegmentation(moved, LABELS, volume)
    cropped = app.addVolumeFromArray(
        labels_array[1:], _oblique(), "cropped", nodeClass="vtkMRMLLabelMapVolumeNode"
    )
    with pytest.raises(ValueError, match="grid"):
        buildSegmentation(cropped, LABELS, volume)
    unknown = labels_array.copy()
    unknown[0, 0, 0] = 9
    odd = app.addVolumeFromArray(unknown, _oblique(), "odd", nodeClass="vtkMRMLLabelMapVolumeNode")
    with pytest.raises(ValueError, match=r"values \[9\]"):
        buildSegmentation(odd, LABELS, volume)


def test_terminology_and_layout_helpers():
    assert terminologyString({"name": "x"}) == ""
    text = terminologyString(
        {
            "name": "aorta",
            "snomed": {
                "code": "15825003",
                "meaning": "Aorta",
                "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
            },
        }
    )
    assert "SCT^123037004^Anatomical Structure" in text and "SCT^15825003^Aorta" in text
    xml = comparisonLayoutXml(("A", "B", "C"))
    assert xml.count('class="vtkMRMLSliceNode"') == 3 and 'singletontag="B"' in xml


def test_comparison_layout_shows_the_three_volumes_linked_fitted_and_restorable(app):
    from MambaMIMSegmenterLib.results import COMPARISON_LAYOUT_ID, COMPARISON_VIEWS, ComparisonLayout

    spacing = np.diag([40.0, 40.0, 40.0, 1.0])
    volumes = [app.addVolumeFromArray(np.zeros((4, 5, 6), np.int16), spacing, n) for n in "IMR"]
    comparison = ComparisonLayout()
    comparison.show(app.scene, volumes, sliceLogics=[])  # no layout node without the application
    assert not comparison.canRestore
    layout = slicer.vtkMRMLLayoutNode()
    layout.SetSingletonTag("vtkMRMLLayoutNode")
    app.scene.AddNode(layout)
    layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    logics = []
    for name in COMPARISON_VIEWS:  # what the layout manager creates for the new views
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(app.appLogic)
        logic.SetMRMLScene(app.scene)
        logic.AddSliceNode(name).SetDimensions(300, 300, 1)
        logics.append(logic)
    fov_before = logics[0].GetSliceNode().GetFieldOfView()
    comparison.show(app.scene, volumes, sliceLogics=logics)
    composites = [logic.GetSliceCompositeNode() for logic in logics]
    assert layout.GetViewArrangement() == COMPARISON_LAYOUT_ID
    assert [c.GetBackgroundVolumeID() for c in composites] == [v.GetID() for v in volumes]
    assert all(c.GetLinkedControl() for c in composites)
    # Fitted: the field of view now spans the 6 × 40 mm volume, not the default 250 mm.
    fov = logics[0].GetSliceNode().GetFieldOfView()
    assert fov != fov_before and 200 <= max(fov[:2]) <= 260 and abs(max(fov[:2]) - 240) < 25
    assert comparison.canRestore and comparison.restore(app.scene)
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    assert not comparison.restore(app.scene)


def test_repeated_segmentations_do_not_leak_the_label_map(app, tmp_path):
    """Defect: CreateOrientedImageDataFromVolumeNode returns a new reference (Slicer's own callers
    UnRegister it); kept, every segmentation leaked a full-size label map (here 8 MiB each)."""
    import gc

    psutil = pytest.importorskip("psutil")
    shape = (128, 256, 256)
    labels = np.zeros(shape, np.uint8)
    labels[10:60, 20:120, 30:200] = 1
    volume = app.addVolumeFromArray(np.zeros((2, 2, 2), np.int16), np.eye(4), "scan")
    label_node = app.addVolumeFromArray(labels, np.eye(4), "labels", nodeClass="vtkMRMLLabelMapVolumeNode")
    path = writeVolume(label_node, tmp_path / "labels.nrrd")
    app.scene.RemoveNode(label_node)
    volume.SetAndObserveImageData(None)
    big = app.addVolumeFromArray(np.zeros(shape, np.int16), np.eye(4), "big scan")
    del label_node, labels

    def one_run():
        segmentation = buildSegmentation(readVolume(path, labelmap=True), LABELS[:1], big)
        assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
        del segmentation
        gc.collect()

    one_run()  # warm-up: allocator pools, VTK class registrations
    process = psutil.Process()
    before = process.memory_info().rss
    for _ in range(8):
        one_run()
    grown = (process.memory_info().rss - before) / 2**20
    assert grown < 24, f"memory grew by {grown:.0f} MiB over 8 segmentations (8 MiB label map each)"
