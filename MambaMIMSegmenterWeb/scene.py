"""One user's case in a trame-slicer scene: the scan, its segmentation or reconstruction, the views.

Everything that reads or writes MRML for the web app is here; the app only maps state to these
calls. Results come from ``MambaMIMSegmenterLib`` (the Slicer module's own logic), so names, colours
and terminology are the model card's in both front ends.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from MambaMIMSegmenterLib.results import COMPARISON_VIEWS, showSegmentation3D
from MambaMIMSegmenterLib.volumeio import guessModality, validateInputVolume
from slicer import vtkMRMLScene, vtkMRMLSegmentationStorageNode, vtkSegmentationConverter
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

from . import dicomseg

# Window/level presets (window, level) of Slicer's Volumes module; "auto" = Slicer's automatic W/L.
WINDOW_LEVEL_PRESETS: dict[str, tuple[float, float] | None] = {
    "CT abdomen": (350.0, 40.0),
    "CT lung": (1400.0, -500.0),
    "CT bone": (1000.0, 400.0),
    "MR auto": None,
}
# File types Slicer's archetype reader opens directly; the rest go through mambamim's reader.
SLICER_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
SCAN_SUFFIXES = (*SLICER_SUFFIXES, ".mgh", ".mgz", ".zip")

SEGMENT_LAYOUT = "Segment"
RECONSTRUCTION_LAYOUT = "Reconstruction"
_DATA_CLASSES = ("vtkMRMLVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLModelNode")


class LoadError(ValueError):
    """A scan could not be opened; the message names the file and says why."""


def scan_suffix(name: str) -> str:
    lower = name.lower()
    return next((s for s in sorted(SCAN_SUFFIXES, key=len, reverse=True) if lower.endswith(s)), "")


def layouts() -> dict[str, Layout]:
    """The Segment layout (axial large; 3-D, coronal, sagittal beside it) and the reconstruction
    layout (input, masked input, reconstruction: three linked axial views, their own view group)."""
    axial, coronal = ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view()
    sagittal, threed = ViewLayoutDefinition.sagittal_view(), ViewLayoutDefinition.threed_view()
    comparison = []
    for tag, label, color in zip(COMPARISON_VIEWS, ("Input", "Masked", "Reconstruction"), _COLORS):
        view = ViewLayoutDefinition.slice_view("Axial", label=label, color=color)
        view.singleton_tag = tag
        view.properties.group = 1
        comparison.append(view)
    return {
        SEGMENT_LAYOUT: Layout(
            LayoutDirection.Horizontal,
            [axial, Layout(LayoutDirection.Vertical, [threed, coronal, sagittal])],
        ),
        RECONSTRUCTION_LAYOUT: Layout(LayoutDirection.Horizontal, comparison),
    }


_COLORS = ("#F34A33", "#EDD54C", "#6EB04B")


class CaseScene:
    """The scan, its results and the views of one session."""

    def __init__(self, slicer_app: SlicerApp, layout_manager: LayoutManager):
        self.app = slicer_app
        self.scene: vtkMRMLScene = slicer_app.scene
        self.layout_manager = layout_manager
        self.volume = None
        self.segmentation = None
        self.reconstruction: tuple[Any, Any] | None = None
        self.labels: list[dict[str, Any]] = []  # the card's labels of the segmentation, in segment order
        self.dicom_dir: Path | None = None  # the DICOM series the scan came from, if any
        self._work: Path | None = None  # the case's own files (an extracted zip)
        self.opacity = 1.0

    # -- batching ---------------------------------------------------------------------------------
    @contextmanager
    def batch(self):
        """One scene update for many node changes: views refresh once at the end, not per node."""
        self.scene.StartState(vtkMRMLScene.BatchProcessState)
        try:
            yield
        finally:
            self.scene.EndState(vtkMRMLScene.BatchProcessState)
            if not self.scene.IsBatchProcessing():
                self._refresh_slice_segmentations()

    def _refresh_slice_segmentations(self) -> None:
        """Make the slice views' segmentation displayable managers catch up with a batch.

        After a batch, Slicer's vtkMRMLSegmentationsDisplayableManager2D only flags itself for an
        update: its ``OnMRMLSceneEndBatchProcess`` calls ``SetUpdateFromMRMLRequested(true)`` without
        ``RequestRender()`` (Slicer 5.10 to 5.12, Modules/Loadable/Segmentations/MRMLDM/
        vtkMRMLSegmentationsDisplayableManager2D.cxx; the 3-D manager does call it), and the update
        runs at its next ``RequestRender`` (protected, not wrapped in Python). In Slicer's desktop the
        slice logic soon modifies the slice nodes; in trame-slicer nothing does, so a segmentation
        added in a batch stayed undrawn until the user scrolled. A slice-node Modified event is the
        manager's own trigger (``UpdateSliceNode``, then ``RequestRender``)."""
        for view in self.app.view_manager.get_slice_views():
            node = view.get_view_node()
            if node is not None:
                node.Modified()

    # -- loading ----------------------------------------------------------------------------------
    def load(self, path: Path, name: str = "") -> Any:
        """Replace the case with the scan at ``path`` (file, zipped DICOM series or DICOM folder)."""
        path = Path(path)
        name = name or _display_name(path)
        work = Path(tempfile.mkdtemp(prefix="mambamim-web-case-"))
        try:
            readable, dicom_dir = _slicer_readable(path, work)
            node = self.app.volumes_logic.AddArchetypeVolume(str(readable), name, 0)
            if node is None or node.GetImageData() is None:
                if node is not None:
                    self.scene.RemoveNode(node)
                raise LoadError(f"{path.name}: not a readable scan")
            try:
                validateInputVolume(node)
            except ValueError as exc:
                self.scene.RemoveNode(node)
                raise LoadError(f"{path.name}: {exc}") from exc
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        if readable.parent == work:  # converted: Slicer has read it
            readable.unlink()
        node.SetName(name)
        with self.batch():
            self.clear(keep=node)
            self.volume = node
            # The series stays while it is the case: a DICOM SEG must reference its instances.
            self.dicom_dir, self._work = dicom_dir, work
            self.set_window_level("CT abdomen" if self.modality() == "CT" else "MR auto")
            self.show_segment_layout()
        self.app.display_manager.reset_views()
        return node

    def modality(self) -> str:
        return guessModality(self.volume) if self.volume is not None else ""

    def clear(self, keep=None) -> None:
        """Remove every scan, segmentation and surface (a new case, or the session ended)."""
        for class_name in _DATA_CLASSES:
            nodes = self.scene.GetNodesByClass(class_name)
            for index in range(nodes.GetNumberOfItems()):
                node = nodes.GetItemAsObject(index)
                if node is not keep and node.GetScene() is not None:
                    self.scene.RemoveNode(node)
        self.volume = keep
        self.segmentation = None
        self.labels = []
        self.reconstruction = None
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
        self.dicom_dir, self._work = None, None
        # Redraw now: a view keeps streaming its last frame, which must not show the previous case.
        for view in self.app.view_manager.get_views():
            view.schedule_render()

    # -- display ----------------------------------------------------------------------------------
    def set_window_level(self, preset: str) -> None:
        if self.volume is None:
            return
        display = self.volume.GetDisplayNode()
        values = WINDOW_LEVEL_PRESETS[preset]
        if values is None:
            display.AutoWindowLevelOn()
        else:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(*values)
        for node in self.reconstruction or ():
            other = node.GetDisplayNode()
            other.SetAutoWindowLevel(False)
            other.SetWindowLevel(display.GetWindow(), display.GetLevel())

    def match_slicer_rendering(self) -> None:
        """Render as Slicer's desktop does by default: multisampling off.

        trame-slicer's views ask for 8x MSAA (``AbstractView``: ``SetMultiSamples(8)``) and the 3-D view
        for depth peeling; with both, translucent surfaces (segment opacity below 1) come out blank on
        Mesa's llvmpipe through EGL. Slicer's views default to MSAA "Off"
        (Base/QTGUI/qSlicerSettingsViewsPanel.cxx, Slicer 5.10), with which depth peeling draws them."""
        for view in self.app.view_manager.get_views():
            view.render_window().SetMultiSamples(0)

    def show_segment_layout(self) -> None:
        self.layout_manager.set_layout(SEGMENT_LAYOUT)
        for view in self.app.view_manager.get_slice_views(0):
            view.set_background_volume_id(self.volume.GetID() if self.volume else None)
            view.set_foreground_volume_id(None)

    def show_reconstruction_layout(self) -> None:
        if self.reconstruction is None:
            return
        self.layout_manager.set_layout(RECONSTRUCTION_LAYOUT)
        volumes = (self.volume, *self.reconstruction)
        for tag, volume in zip(COMPARISON_VIEWS, volumes):
            view = self.app.view_manager.get_view(tag)
            view.set_background_volume_id(volume.GetID())
            view.set_foreground_volume_id(None)
            composite = _composite(view)
            composite.SetLinkedControl(True)
        self.app.display_manager.reset_views(1)

    # -- results ----------------------------------------------------------------------------------
    def set_segmentation(self, node, labels: list[dict[str, Any]]) -> None:
        """Show a finished segmentation (from the library) in the Segment views, 2-D only at first:
        Slicer's own segmentation display (fill and outline in the card's colours, per-segment
        visibility and opacity); 3-D surfaces on demand (:meth:`show_surfaces`)."""
        if self.segmentation is not None and self.segmentation is not node:
            self.scene.RemoveNode(self.segmentation)
        self.segmentation = node
        self.labels = list(labels)
        display = node.GetDisplayNode()
        display.SetVisibility(True)
        display.SetVisibility2D(True)
        display.SetVisibility3D(False)
        display.SetOpacity(self.opacity)
        self.show_segment_layout()
        self.jump_to_largest_segment()

    def jump_to_largest_segment(self) -> None:
        """Move the slice planes through the largest segment's centre (as Slicer's segment list
        "jump" does), so the result is in view whatever slice the scan opened at."""
        volumes = {segment_id: self._segment_volume_ml(segment_id) for segment_id in self._segment_ids()}
        if not volumes or max(volumes.values()) <= 0:
            return
        center = self.segmentation.GetSegmentCenterRAS(max(volumes, key=volumes.get))
        if center is None:
            return
        for view in self.app.view_manager.get_slice_views(0):
            view.get_view_node().JumpSliceByOffsetting(*center)

    def set_reconstruction(self, masked, reconstruction) -> None:
        for node in self.reconstruction or ():
            self.scene.RemoveNode(node)
        self.reconstruction = (masked, reconstruction)

    def segment_rows(self) -> list[dict[str, Any]]:
        """One row per segment for the list: id, name, colour, visibility, volume in mL."""
        if self.segmentation is None:
            return []
        segmentation = self.segmentation.GetSegmentation()
        display = self.segmentation.GetDisplayNode()
        rows = []
        for index in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(index)
            segment = segmentation.GetSegment(segment_id)
            rgb = [round(255 * c) for c in segment.GetColor()]
            rows.append(
                {
                    "id": segment_id,
                    "name": segment.GetName(),
                    "color": "#{:02x}{:02x}{:02x}".format(*rgb),
                    "visible": bool(display.GetSegmentVisibility(segment_id)),
                    "volume_ml": round(self._segment_volume_ml(segment_id), 1),
                }
            )
        return rows

    def _segment_volume_ml(self, segment_id: str) -> float:
        from vtkmodules.util.numpy_support import vtk_to_numpy

        segmentation = self.segmentation.GetSegmentation()
        name = vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        image = segmentation.GetSegmentRepresentation(segment_id, name)
        if image is None or image.GetPointData().GetScalars() is None:
            return 0.0
        label = segmentation.GetSegment(segment_id).GetLabelValue()
        voxels = int(np.count_nonzero(vtk_to_numpy(image.GetPointData().GetScalars()) == label))
        # Oriented image data keep unit direction vectors apart from the spacing.
        return voxels * float(np.prod(image.GetSpacing())) / 1000.0

    def set_segment_visible(self, segment_id: str, visible: bool) -> None:
        if self.segmentation is not None:
            self.segmentation.GetDisplayNode().SetSegmentVisibility(segment_id, bool(visible))

    def set_segmentation_opacity(self, opacity: float) -> None:
        """The segmentation's overall opacity, as Segmentations' module slider: it scales the 2-D fill
        (0.5 by default) and outline, and the 3-D surfaces."""
        self.opacity = float(opacity)
        if self.segmentation is not None:
            self.segmentation.GetDisplayNode().SetOpacity(self.opacity)

    def _segment_ids(self) -> list[str]:
        segmentation = self.segmentation.GetSegmentation()
        return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]

    def show_surfaces(self, show: bool) -> None:
        if self.segmentation is not None:
            with self.batch():
                showSegmentation3D(self.segmentation, bool(show))
            if show:  # the 3-D camera was set up on an empty scene: frame the surfaces
                for view in self.app.view_manager.get_threed_views():
                    view.reset_view()

    # -- downloads --------------------------------------------------------------------------------
    def export_segmentation(self, kind: str, folder: Path) -> Path:
        """Write the segmentation as a label map (``labels``, NIfTI, card label values), a
        ``.seg.nrrd`` (Slicer's segmentation file with names and colours) or a DICOM SEG
        (``dicom-seg``, referencing the series the scan came from); the file's path."""
        if self.segmentation is None or self.volume is None:
            raise LoadError("there is no segmentation to download yet")
        base = _safe_stem(self.volume.GetName())
        if kind == "dicom-seg":
            return self._export_dicom_seg(folder / f"{base}_seg.dcm")
        if kind == "seg.nrrd":
            path = folder / f"{base}.seg.nrrd"
            storage = vtkMRMLSegmentationStorageNode()  # Slicer's own writer: names, colours, terminology
            storage.SetFileName(str(path))
            if not storage.WriteData(self.segmentation):
                raise OSError(f"could not write {path.name}")
            return path
        if kind != "labels":
            raise ValueError(f"unknown download {kind!r}")
        return self._write_labelmap(folder / f"{base}_labels.nii.gz")

    def _write_labelmap(self, path: Path) -> Path:
        """The segments as one label map on the scan's grid, segment i as value i + 1."""
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{path.name} labels")
        try:
            ids = self._segment_ids()
            _export_labelmap(self.app.segmentations_logic, self.segmentation, ids, labelmap, self.volume)
            self.app.io_manager.write_volume(labelmap, path)
        finally:
            self.scene.RemoveNode(labelmap)
        return path

    def _export_dicom_seg(self, path: Path) -> Path:
        reason = dicomseg.unavailable_reason(self.dicom_dir is not None)
        if reason:
            raise LoadError(reason)
        if len(self.labels) != len(self._segment_ids()):
            raise LoadError("the segmentation's segments no longer match the model card's labels")
        writer, _ = dicomseg.find_writer()
        # Doubles in NRRD keep the scan's exact grid (the writer matches each slice to the series).
        labelmap = self._write_labelmap(path.with_name(path.stem + "_labels.nrrd"))
        labels = [dict(label, value=index) for index, label in enumerate(self.labels, start=1)]
        try:
            writer(labelmap, self.dicom_dir, labels, path)
        except ValueError as exc:  # the writer's own errors name the reason (e.g. no organ found)
            raise LoadError(f"DICOM SEG: {exc}") from exc
        finally:
            labelmap.unlink(missing_ok=True)
        return path


def _composite(view):
    """The slice view's composite node (layers); trame-slicer keeps the slice logic private."""
    return view._logic.GetSliceCompositeNode()


def _export_labelmap(logic, segmentation_node, segment_ids, labelmap, reference) -> None:
    """Label values in card order (segment i → i + 1 is the card's value when the card lists 1..N)."""
    from vtkmodules.vtkCommonCore import vtkStringArray

    ids = vtkStringArray()
    for segment_id in segment_ids:
        ids.InsertNextValue(segment_id)
    if not logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, reference):
        raise OSError("could not export the segmentation as a label map")


def _display_name(path: Path) -> str:
    name = path.name
    suffix = scan_suffix(name)
    return name[: -len(suffix)] if suffix else name


def _safe_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "scan"


def _slicer_readable(path: Path, tmp: Path) -> tuple[Path, Path | None]:
    """``path`` itself when Slicer reads it; else the scan converted to NRRD in ``tmp`` by mambamim's
    reader (MGH/MGZ, DICOM series folders, zipped DICOM), keeping its geometry. Second: the DICOM
    series folder (extracted into ``tmp`` from a zip), or None."""
    if path.is_file() and scan_suffix(path.name) in SLICER_SUFFIXES:
        return path, None
    source = path
    if path.is_file() and zipfile.is_zipfile(path):
        source = tmp / "dicom"
        _extract_zip(path, source)
    elif path.is_file() and scan_suffix(path.name) not in SCAN_SUFFIXES:
        raise LoadError(f"{path.name}: unsupported file type (use {', '.join(SCAN_SUFFIXES)})")
    import SimpleITK as sitk
    from mambamim.data.imageio import read_image

    if source.is_dir():
        source = _series_folder(source)
    try:
        image = read_image(source)
    except Exception as exc:  # the reader's message names the file and the reason
        raise LoadError(f"{path.name}: {exc}") from exc
    converted = tmp / "scan.nrrd"
    sitk.WriteImage(image, str(converted))
    return converted, source if source.is_dir() else None


def _extract_zip(archive: Path, target: Path) -> None:
    target.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            destination = (target / member.filename).resolve()
            if not destination.is_relative_to(target.resolve()):
                raise LoadError(f"{archive.name}: unsafe path {member.filename!r} in the zip")
        zipped.extractall(target)


def _series_folder(folder: Path) -> Path:
    """The folder that holds the files (a zip often wraps the series in one or more folders)."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(("__MACOSX", "."))]
        if len(entries) == 1 and entries[0].is_dir():
            folder = entries[0]
        else:
            return folder
