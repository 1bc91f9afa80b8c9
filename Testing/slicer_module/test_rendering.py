"""What a user sees, rendered offscreen (EGL) by Slicer's own slice logic and displayable managers
(slicer-core): after Segment, the segmentation over the CT in the axial, sagittal and coronal views and
as 3-D surfaces; after Reconstruct, input, masked input and reconstruction side by side. The pictures
are written to out/renders/ (ignored by git) and the assertions are on their pixels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer
from conftest import ijkToRasOf, segmentArray, volumeArray
from MambaMIMSegmenterLib.results import COMPARISON_VIEWS, showSegmentation3D, showVolumeInSliceViews

ROOT = Path(__file__).resolve().parents[2]
RENDERS = ROOT / "out" / "renders"
_PROBE = (
    "import vtk; w = vtk.vtkRenderWindow(); w.SetOffScreenRendering(1); w.SetSize(8, 8); "
    "w.AddRenderer(vtk.vtkRenderer()); w.Render(); print(w.GetClassName())"
)


def _egl_available() -> bool:
    """A failed EGL context can crash the process, so it is probed in a child first."""
    env = {**os.environ, "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow"}
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0 and "vtkEGLRenderWindow" in probe.stdout


if not _egl_available():
    pytest.skip("no offscreen EGL rendering here (make egl installs Mesa's EGL)", allow_module_level=True)
import offscreen_views as offscreen  # noqa: E402


def _eroded(mask: np.ndarray, pixels: int = 2) -> np.ndarray:
    """Pixels whose neighbours within ``pixels`` share the value: away from outlines and edges."""
    out = mask.copy()
    for shift in range(1, pixels + 1):
        for axis in (0, 1):
            for sign in (1, -1):
                out &= np.roll(mask, sign * shift, axis=axis)
    out[:pixels], out[-pixels:], out[:, :pixels], out[:, -pixels:] = False, False, False, False
    return out


def _label_map(segmentation, volume, card_labels) -> np.ndarray:
    """The segmentation as one label array on the volume grid (0 background, else the card value)."""
    labels = np.zeros(volumeArray(volume).shape, np.int64)
    for index, label in enumerate(card_labels):
        segment_id = segmentation.GetSegmentation().GetNthSegmentID(index)
        array, _, _ = segmentArray(segmentation, segment_id)
        labels[array > 0] = label["value"]
    return labels


def test_segment_result_in_the_three_slice_views_and_3d(app, logic, ct_node, demo_package):
    from MambaMIMSegmenterLib.registry import readCard

    card = readCard(demo_package)
    colours = {label["value"]: np.array(label["color"], float) for label in card["labels"]}
    segmentation = logic.segment(ct_node, demo_package, "cpu", fast=True)
    views = [
        offscreen.SliceView(app, "Red", "Axial"),
        offscreen.SliceView(app, "Yellow", "Sagittal"),
        offscreen.SliceView(app, "Green", "Coronal"),
    ]
    threeD = offscreen.ThreeDView(app)
    # One batch: the setup changes the scene many times, the views render once each, at capture.
    app.scene.StartState(slicer.vtkMRMLScene.BatchProcessState)
    showVolumeInSliceViews(app.scene, ct_node, sliceLogics=[v.logic for v in views])
    showSegmentation3D(segmentation, True)
    labels = _label_map(segmentation, ct_node, card["labels"])
    # Scroll to the segmented organs, as a user would (the fitted views show the volume's centre).
    centre = np.argwhere(labels > 0).mean(axis=0)[::-1]  # (I, J, K)
    ras = ijkToRasOf(ct_node) @ np.append(centre, 1.0)
    for view in views:
        view.node.JumpSliceByOffsetting(*ras[:3])
    app.scene.EndState(slicer.vtkMRMLScene.BatchProcessState)
    assert all(v.renders == 0 for v in (*views, threeD)), "nothing rendered during the setup"

    display = segmentation.GetDisplayNode()
    seen = set()
    pictures = []
    for view in views:
        with_segments = view.capture()
        display.SetVisibility2D(False)
        without = view.capture()
        display.SetVisibility2D(True)
        assert view.renders == 2
        pictures.append(with_segments)
        offscreen.savePng(with_segments, RENDERS / f"segment-{view.node.GetName()}.png")
        pixel_labels = offscreen.sampleVolume(labels, offscreen.ijkOfRas(ct_node, view.rasOfPixels()))
        assert (pixel_labels >= 0).mean() > 0.3, "the view is fitted to the segmented volume"
        assert without[pixel_labels >= 0].std() > 5, "the CT itself is shown (not a blank view)"
        background = _eroded(pixel_labels == 0, 3)
        assert np.abs(with_segments[background].astype(int) - without[background]).max() <= 3
        for value in np.unique(pixel_labels[pixel_labels > 0]):
            inside = _eroded(pixel_labels == value)
            if inside.sum() < 30:
                continue
            colour = colours[int(value)]
            closer = np.linalg.norm(with_segments[inside] - colour, axis=1) < np.linalg.norm(
                without[inside] - colour, axis=1
            )
            assert closer.mean() > 0.95, (
                f"segment {value} is not drawn in its colour in {view.node.GetName()}"
            )
            seen.add(int(value))
    assert len(seen) >= 3, "the organs are drawn in their colours"

    threeD.lookFromAnterior()
    surfaces = threeD.capture()
    offscreen.savePng(surfaces, RENDERS / "segment-3d.png")
    lit = surfaces.sum(axis=2) > 30
    assert lit.mean() > 0.01, "the 3-D view shows the surfaces"
    directions = surfaces[lit] / np.linalg.norm(surfaces[lit], axis=1, keepdims=True)
    matched = [v for v in seen if (directions @ (colours[v] / np.linalg.norm(colours[v])) > 0.995).sum() > 20]
    assert matched, "the surfaces are shaded in their segments' colours"
    offscreen.savePng(np.concatenate([*pictures, surfaces], axis=1), RENDERS / "segment.png")


def test_reconstruction_side_by_side_fitted_with_the_mask_visible(app, logic, small_ct_node, mim_checkpoint):
    views = [offscreen.SliceView(app, name, "Axial") for name in COMPARISON_VIEWS]
    masked, reconstruction = logic.reconstruct(
        small_ct_node, mim_checkpoint, maskRatio=0.75, seed=1, device="cpu", showResult=False
    )
    volumes = (small_ct_node, masked, reconstruction)
    app.scene.StartState(slicer.vtkMRMLScene.BatchProcessState)
    logic.comparisonLayout.show(app.scene, volumes, sliceLogics=[v.logic for v in views])
    app.scene.EndState(slicer.vtkMRMLScene.BatchProcessState)
    pictures = [view.capture() for view in views]
    assert [v.renders for v in views] == [1, 1, 1]
    offscreen.savePng(np.concatenate(pictures, axis=1), RENDERS / "reconstruct.png")

    ijk = offscreen.ijkOfRas(small_ct_node, views[0].rasOfPixels())
    inside = offscreen.sampleVolume(np.ones(volumeArray(small_ct_node).shape, np.int64), ijk, outside=0) > 0
    # Fitted: the volume fills the view along its larger side, in all three views alike.
    rows, columns = np.nonzero(inside)
    assert max(np.ptp(rows), np.ptp(columns)) > 0.9 * inside.shape[0]
    for view in views[1:]:
        assert np.allclose(view.rasOfPixels(), views[0].rasOfPixels(), atol=1e-3)
    # The masked view shows the mask: it differs from the input view exactly where voxels were masked.
    changed_voxels = ~np.isclose(volumeArray(masked), volumeArray(small_ct_node), atol=1.0)
    changed = offscreen.sampleVolume(changed_voxels.astype(np.int64), ijk, outside=0) > 0
    # (patch borders are interpolated between the two, so only pixels well inside a patch count)
    hidden, shown = _eroded(changed & inside, 4), _eroded(~changed & inside, 4)
    assert hidden.sum() > 100 and shown.sum() > 100, "the slice has masked and visible patches"
    difference = np.abs(pictures[1].astype(int) - pictures[0]).sum(axis=2)
    assert (difference[shown] <= 3).mean() > 0.98
    assert (difference[hidden] > 3).mean() > 0.8
    assert np.abs(pictures[2].astype(int) - pictures[1]).sum(axis=2)[hidden].mean() > 3, (
        "the reconstruction fills the masked patches"
    )
