"""One user's case in a trame-slicer scene: the scan, its segmentation or reconstruction, the views.

Everything that reads or writes MRML for the web app is here; the app only maps state to these
calls. Results come from ``MambaMIMSegmenterLib`` (the Slicer module's own logic), so names, colours
and terminology are the model card's in both front ends.
"""

from __future__ import annotations

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
        self.overlay = None  # the segmentation as a coloured label map for the slice views
        self.opacity = 0.6

    # -- batching ---------------------------------------------------------------------------------
    @contextmanager
    def batch(self):
        """One scene update for many node changes: views refresh once at the end, not per node."""
        self.scene.StartState(vtkMRMLScene.BatchProcessState)
        try:
            yield
        finally:
            self.scene.EndState(vtkMRMLScene.BatchProcessState)

    # -- loading ----------------------------------------------------------------------------------
    def load(self, path: Path, name: str = "") -> Any:
        """Replace the case with the scan at ``path`` (file, zipped DICOM series or DICOM folder)."""
        path = Path(path)
        name = name or _display_name(path)
        with tempfile.TemporaryDirectory(prefix="mambamim-web-load-") as tmp:
            readable = _slicer_readable(path, Path(tmp))
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
        node.SetName(name)
        with self.batch():
            self.clear(keep=node)
            self.volume = node
            self.set_window_level("CT abdomen" if self.modality() == "CT" else "MR auto")
            self.show_segment_layout()
        self.app.display_manager.reset_views()
        return node

    def modality(self) -> str:
        return guessModality(self.volume) if self.volume is not None else ""

    def clear(self, keep=None) -> None:
        """Remove every scan, segmentation and surface (a new case, or the session ended)."""
        if self.overlay is not None:
            self.scene.RemoveNode(self.overlay.GetDisplayNode().GetColorNode())
        for class_name in _DATA_CLASSES:
            nodes = self.scene.GetNodesByClass(class_name)
            for index in range(nodes.GetNumberOfItems()):
                node = nodes.GetItemAsObject(index)
                if node is not keep and node.GetScene() is not None:
                    self.scene.RemoveNode(node)
        self.volume = keep
        self.segmentation = None
        self.reconstruction = None
        self.overlay = None
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

    def show_segment_layout(self) -> None:
        self.layout_manager.set_layout(SEGMENT_LAYOUT)
        for view in self.app.view_manager.get_slice_views(0):
            view.set_background_volume_id(self.volume.GetID() if self.volume else None)
            view.set_foreground_volume_id(None)
            composite = _composite(view)
            composite.SetLabelVolumeID(self.overlay.GetID() if self.overlay is not None else None)
            composite.SetLabelOpacity(self.opacity)

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
    def set_segmentation(self, node) -> None:
        """Show a finished segmentation (from the library) in the Segment views, 2-D only at first.

        The slice views draw it as a label layer in the card's colours: with slicer-core 5.11 and
        slicer-layer-dm 2.0, Slicer's 2-D segmentation displayable manager draws nothing in
        trame-slicer's slice views, while label layers render; the 3-D view shows the segmentation
        node's own surfaces."""
        if self.segmentation is not None and self.segmentation is not node:
            self.scene.RemoveNode(self.segmentation)
        self.segmentation = node
        display = node.GetDisplayNode()
        display.SetVisibility2D(False)
        display.SetVisibility3D(False)
        self._update_overlay()
        self.show_segment_layout()

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
            with self.batch():
                self.segmentation.GetDisplayNode().SetSegmentVisibility(segment_id, bool(visible))
                self._update_overlay_colours()

    def set_segmentation_opacity(self, opacity: float) -> None:
        self.opacity = float(opacity)
        if self.segmentation is not None:
            self.segmentation.GetDisplayNode().SetOpacity3D(self.opacity)
        for view in self.app.view_manager.get_slice_views(0):
            _composite(view).SetLabelOpacity(self.opacity)

    def _update_overlay(self) -> None:
        """(Re)build the label-layer copy of the segmentation: values 1..N in segment order."""
        if self.overlay is None:
            self.overlay = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "segmentation overlay")
            self.overlay.SetHideFromEditors(True)
            self.overlay.CreateDefaultDisplayNodes()
            colours = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", "segment colours")
            colours.SetTypeToUser()
            colours.SetHideFromEditors(True)
            colours.SetNumberOfColors(1)
            colours.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
            self.overlay.GetDisplayNode().SetAndObserveColorNodeID(colours.GetID())
        _export_labelmap(
            self.app.segmentations_logic, self.segmentation, self._segment_ids(), self.overlay, self.volume
        )
        self._update_overlay_colours()

    def _update_overlay_colours(self) -> None:
        """Entry i + 1 is segment i's colour (the card's), transparent when the segment is hidden."""
        colours = self.overlay.GetDisplayNode().GetColorNode()
        segmentation = self.segmentation.GetSegmentation()
        display = self.segmentation.GetDisplayNode()
        ids = self._segment_ids()
        colours.SetNumberOfColors(len(ids) + 1)
        colours.GetLookupTable().SetRange(0, len(ids))
        colours.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        for index, segment_id in enumerate(ids, start=1):
            r, g, b = segmentation.GetSegment(segment_id).GetColor()
            alpha = 1.0 if display.GetSegmentVisibility(segment_id) else 0.0
            colours.SetColor(index, segmentation.GetSegment(segment_id).GetName(), r, g, b, alpha)
        colours.Modified()

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
        """Write the segmentation as a label map (``labels``, NIfTI, card label values) or a
        ``.seg.nrrd`` (Slicer's segmentation file with names and colours); the file's path."""
        if self.segmentation is None or self.volume is None:
            raise LoadError("there is no segmentation to download yet")
        base = _safe_stem(self.volume.GetName())
        if kind == "seg.nrrd":
            path = folder / f"{base}.seg.nrrd"
            storage = vtkMRMLSegmentationStorageNode()  # Slicer's own writer: names, colours, terminology
            storage.SetFileName(str(path))
            if not storage.WriteData(self.segmentation):
                raise OSError(f"could not write {path.name}")
            return path
        if kind != "labels":
            raise ValueError(f"unknown download {kind!r}")
        path = folder / f"{base}_labels.nii.gz"
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{base} labels")
        try:
            ids = self._segment_ids()
            _export_labelmap(self.app.segmentations_logic, self.segmentation, ids, labelmap, self.volume)
            self.app.io_manager.write_volume(labelmap, path)
        finally:
            self.scene.RemoveNode(labelmap)
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


def _slicer_readable(path: Path, tmp: Path) -> Path:
    """``path`` itself when Slicer reads it; else the scan converted to NRRD by mambamim's reader
    (MGH/MGZ, DICOM series folders, zipped DICOM), keeping its geometry."""
    if path.is_file() and scan_suffix(path.name) in SLICER_SUFFIXES:
        return path
    source = path
    if path.is_file() and zipfile.is_zipfile(path):
        source = tmp / "dicom"
        _extract_zip(path, source)
    elif path.is_file() and scan_suffix(path.name) not in SCAN_SUFFIXES:
        raise LoadError(f"{path.name}: unsupported file type (use {', '.join(SCAN_SUFFIXES)})")
    import SimpleITK as sitk
    from mambamim.data.imageio import read_image

    try:
        image = read_image(_series_folder(source) if source.is_dir() else source)
    except Exception as exc:  # the reader's message names the file and the reason
        raise LoadError(f"{path.name}: {exc}") from exc
    converted = tmp / "scan.nrrd"
    sitk.WriteImage(image, str(converted))
    return converted


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
