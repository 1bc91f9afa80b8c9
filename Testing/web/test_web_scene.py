"""The web app's scene in-process, without a browser or the engine: the segmentation comes from the
sample's reference label map through the library's own ``buildSegmentation``/``addSegmentation`` (what
its finishing step does with the engine's output), inside the app's batched update, and the views are
read back from their render windows (the frames that trame-slicer streams).

Regression checks for two trame-slicer / slicer-core 5.11 pitfalls (see CaseScene): Slicer's 2-D
segmentation displayable manager must draw a segmentation added in a batch, and translucent 3-D
surfaces must show with depth peeling.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import DEMO_CARD, chromatic, match_card_colours

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

SIZE = 320


@pytest.fixture(scope="module")
def web(sample_scan):
    """The app (not serving), its views sized as a browser would, the sample loaded."""
    os.environ["TRAME_ARGS"] = "--server"
    from trame.app import get_server
    from vtkmodules.vtkCommonCore import vtkCommand

    from MambaMIMSegmenterWeb.app import AppOptions, SegmenterWebApp

    app = SegmenterWebApp(AppOptions(load=sample_scan), server=get_server("scene_test", client_type="vue3"))
    for view in app.slicer_app.view_manager.get_views():
        view.render_window().SetSize(SIZE, SIZE)
        view.interactor().InvokeEvent(vtkCommand.WindowResizeEvent)  # what a browser resize sends
    app.slicer_app.display_manager.reset_views()
    yield app
    app.end_session()


def _view(app, tag: str):
    return app.slicer_app.view_manager.get_view(tag)


def frame(app, tag: str) -> np.ndarray:
    """The view's frame as streamed: the render window rendered, its buffer read (H, W, 3)."""
    from slicer import vtkMRMLLayerDisplayableManager
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkImageData

    window = _view(app, tag).render_window()
    window.Render()
    image = vtkImageData()
    vtkMRMLLayerDisplayableManager.RenderWindowBufferToImage(window, image)
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]
    return pixels.astype(np.int16)


def _add_segmentation(app, labels_path, labels):
    """The library's finishing step on a label map file, as the engine's job runs it (batched)."""
    from MambaMIMSegmenterLib.results import addSegmentation, buildSegmentation

    volumes = app.slicer_app.volumes_logic
    with app.case.batch():
        labelmap = volumes.AddArchetypeVolume(str(labels_path), "reference labels", 1)
        node = buildSegmentation(labelmap, labels, app.case.volume)
        app.slicer_app.scene.RemoveNode(labelmap)
        addSegmentation(node, app.case.volume, app.slicer_app.scene)
    app._segmentation_done(node, labels)
    return node


@pytest.fixture(scope="module")
def demo_labels_card():
    return json.loads(DEMO_CARD.read_text())["labels"]


@pytest.fixture(scope="module")
def segmented(web, sample_scan, demo_labels_card):
    web.load_scan(sample_scan)
    _add_segmentation(web, sample_scan.parent / "ct_labels_btcv13.nii.gz", demo_labels_card)
    return web


def _shown(pixels, labels) -> dict[str, int]:
    """How many pixels show each card colour."""
    matched = match_card_colours(pixels, np.array([label["color"] for label in labels]))
    return {labels[i]["name"]: int((matched == i).sum()) for i in set(matched[matched >= 0].tolist())}


def test_slice_views_use_slicers_segmentation_display(segmented, demo_labels_card):
    app = segmented
    # No label layer stands in for the segmentation: the slice views draw the node itself.
    for view in app.slicer_app.view_manager.get_slice_views(0):
        assert not view._logic.GetSliceCompositeNode().GetLabelVolumeID()
    coronal = frame(app, "Green")
    assert chromatic(coronal).mean() > 0.02, "the coronal view shows no segment after the batch"
    # The scan opened on its middle axial slice, below every organ: the planes moved to the liver.
    assert chromatic(frame(app, "Red")).mean() > 0.02, "the axial view does not cross the segmentation"
    matched = match_card_colours(coronal, np.array([label["color"] for label in demo_labels_card]))
    assert (matched >= 0).mean() > 0.9
    before = _shown(coronal, demo_labels_card)
    assert {"liver", "spleen", "aorta"} <= set(before), before

    # Per-segment visibility and the overall opacity act on the display, as in Slicer.
    app.set_segment_visible("liver", False)
    hidden = _shown(frame(app, "Green"), demo_labels_card)
    assert hidden.get("liver", 0) < 0.05 * before["liver"] and hidden.get("spleen", 0) > 0
    app.set_segment_visible("liver", True)
    app.case.set_segmentation_opacity(0.0)
    assert chromatic(frame(app, "Green")).mean() < 0.001
    app.case.set_segmentation_opacity(1.0)
    assert _shown(frame(app, "Green"), demo_labels_card).get("liver", 0) > 0.5 * before["liver"]


def test_translucent_surfaces_show_in_the_3d_view(segmented, demo_labels_card):
    app = segmented
    assert chromatic(frame(app, "ThreeD")).mean() < 0.001, "surfaces before Show 3-D"
    app.case.set_segmentation_opacity(0.6)  # translucent: depth peeling, which 8x MSAA broke
    app.toggle_surfaces()
    pixels = frame(app, "ThreeD")
    assert chromatic(pixels).mean() > 0.05, "the 3-D view shows no surfaces"
    shown = _shown(pixels, demo_labels_card)
    assert {"liver", "spleen", "kidney_right"} <= set(shown), shown
    app.toggle_surfaces()
    assert chromatic(frame(app, "ThreeD")).mean() < 0.001
    app.case.set_segmentation_opacity(1.0)


def test_dicom_seg_download(web, sample_scan, tmp_path):
    """Offered only for a scan from a DICOM series; written by the engine's writer when installed,
    else refused with the reason the page shows."""
    from MambaMIMSegmenterWeb import dicomseg
    from MambaMIMSegmenterWeb.scene import LoadError

    assert web.load_scan(sample_scan)
    labels = json.loads(DEMO_CARD.read_text())["labels"]
    _add_segmentation(web, sample_scan.parent / "ct_labels_btcv13.nii.gz", labels)
    assert "DICOM series" in web.state.dicom_seg_reason
    with pytest.raises(LoadError, match="DICOM series"):
        web.case.export_segmentation("dicom-seg", tmp_path)

    series = sample_scan.parent / "dicom"
    assert web.load_scan(series)
    names = json.loads((sample_scan.parent / "labels_total.json").read_text())
    rng = np.random.default_rng(0)
    total = [
        {"value": int(value), "name": name, "color": rng.integers(40, 255, 3).tolist()}
        for value, name in names.items()
    ]
    _add_segmentation(web, sample_scan.parent / "dicom_labels_total.nii.gz", total)
    writer, reason = dicomseg.find_writer()
    assert web.state.dicom_seg_reason == reason
    if writer is None:
        assert "not installed" in reason
        with pytest.raises(LoadError, match="not installed"):
            web.case.export_segmentation("dicom-seg", tmp_path)
        return
    import pydicom

    path = web.case.export_segmentation("dicom-seg", tmp_path)
    seg = pydicom.dcmread(path)
    assert seg.Modality == "SEG"
    assert {s.SegmentLabel for s in seg.SegmentSequence} >= {"liver", "spleen"}
    # Every slice of the series is referenced (this anonymised series keeps its instance UIDs in the
    # file meta header only).
    references = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    referenced = {item.ReferencedSOPInstanceUID for item in references}
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.iterdir()]
    instances = {header.file_meta.MediaStorageSOPInstanceUID for header in headers}
    assert referenced == instances


def test_dicom_folder_kept_only_while_it_is_the_case(web, sample_scan, tmp_path):
    """A zipped series is extracted for the case and removed with it."""
    import zipfile

    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted((sample_scan.parent / "dicom").iterdir()):
            zipped.write(path, f"study/{path.name}")
    assert web.load_scan(archive)
    extracted = web.case.dicom_dir
    assert extracted is not None and len(list(extracted.iterdir())) == 20
    assert web.load_scan(sample_scan)
    assert web.case.dicom_dir is None and not extracted.exists()
