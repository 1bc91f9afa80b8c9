"""Turn engine outputs into scene content: segmentation nodes and reconstruction volumes.

Every node is completely built *outside* the scene and added only at the end, so a failure at any
step leaves the scene exactly as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import vtk

from .volumeio import assertSameGeometry, volumeArray

# Segments whose card has no terminology code still get the generic anatomy category.
_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
_ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")


def terminologyString(label: dict[str, Any]) -> str:
    """Slicer terminology tag for a card label whose ``snomed`` is a code or ``{code, meaning,
    scheme?, category?}``; empty when the card has no code."""
    code = label.get("snomed")
    if not code:
        return ""
    typeCode = code if isinstance(code, dict) else {"code": str(code)}
    category = typeCode.get("category") or {}
    entry = slicer.vtkSlicerTerminologyEntry()
    entry.SetTerminologyContextName(_CONTEXT)
    categoryObject, typeObject = entry.GetCategoryObject(), entry.GetTypeObject()
    categoryObject.SetCodingSchemeDesignator(category.get("scheme", _ANATOMICAL_STRUCTURE[0]))
    categoryObject.SetCodeValue(str(category.get("code", _ANATOMICAL_STRUCTURE[1])))
    categoryObject.SetCodeMeaning(category.get("meaning", _ANATOMICAL_STRUCTURE[2]))
    typeObject.SetCodingSchemeDesignator(typeCode.get("scheme", "SCT"))
    typeObject.SetCodeValue(str(typeCode.get("code", "")))
    typeObject.SetCodeMeaning(typeCode.get("meaning", label["name"]))
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(entry)


def buildSegmentation(labelmapNode, labels: list[dict[str, Any]], volumeNode):
    """A new segmentation node (not in a scene) with one segment per model label, in card order, named
    and coloured from the card, binary labelmaps on the input volume's grid, the input as reference
    geometry. Organs the model did not find get an empty segment, so the segment list is predictable."""
    assertSameGeometry(volumeNode, labelmapNode, "label map")
    values = np.unique(volumeArray(labelmapNode))
    unexpected = sorted(set(values.tolist()) - {0} - {int(label["value"]) for label in labels})
    if unexpected:
        raise ValueError(f"the label map holds values {unexpected} that the model card does not define")
    segmentationNode = slicer.vtkMRMLSegmentationNode()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    segmentation = segmentationNode.GetSegmentation()
    binaryName = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    segmentation.SetSourceRepresentationName(binaryName)
    # A new reference (the C++ factory returns it owned by the caller): release it as Slicer's own
    # callers do, or every run leaks a full-size copy of the label map.
    labelImage = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(labelmapNode)
    try:
        _addSegments(segmentation, labelImage, labels, binaryName)
    finally:
        labelImage.UnRegister(None)
    # One shared labelmap instead of one volume per organ (organs never overlap in a label map).
    segmentation.CollapseBinaryLabelmaps(False)
    return segmentationNode


def _addSegments(segmentation, labelImage, labels: list[dict[str, Any]], binaryName: str) -> None:
    """One segment per label, each a binary labelmap on ``labelImage``'s grid."""
    for label in labels:
        value = int(label["value"])
        threshold = vtk.vtkImageThreshold()
        threshold.SetInputData(labelImage)
        threshold.ThresholdBetween(value, value)
        threshold.SetInValue(1)
        threshold.SetOutValue(0)
        threshold.SetOutputScalarTypeToUnsignedChar()
        threshold.Update()
        mask = slicer.vtkOrientedImageData()
        mask.ShallowCopy(threshold.GetOutput())
        mask.CopyDirections(labelImage)
        segment = slicer.vtkSegment()
        segment.SetName(label["name"])
        segment.SetColor([c / 255.0 for c in label["color"]])
        segment.SetLabelValue(1)
        segment.AddRepresentation(binaryName, mask)
        terminology = terminologyString(label)
        if terminology:
            segment.SetTerminology(terminology)
        segmentation.AddSegment(segment, _segmentId(label["name"], segmentation))


def _segmentId(name: str, segmentation) -> str:
    """Readable, unique segment IDs ("liver"), so scripts can address segments by name."""
    base = "".join(c if c.isalnum() else "_" for c in name) or "segment"
    candidate, index = base, 1
    while segmentation.GetSegment(candidate) is not None:
        index += 1
        candidate = f"{base}_{index}"
    return candidate


def placeInScene(node, volumeNode, scene, name: str):
    """Add ``node`` next to the input: same parent transform, same subject-hierarchy parent (study)."""
    node.SetName(name)
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    volumeItem = shNode.GetItemByDataNode(volumeNode)
    parent = shNode.GetItemParent(volumeItem) if volumeItem else shNode.GetSceneItemID()
    item = shNode.GetItemByDataNode(node) or shNode.CreateItem(parent, node)
    shNode.SetItemParent(item, parent)
    return node


def removeFromScene(node, scene) -> None:
    """Remove ``node`` with its display and storage nodes and its subject-hierarchy item."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = shNode.GetItemByDataNode(node) if shNode is not None else 0
    helpers = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None and helper.GetScene() is scene:
            scene.RemoveNode(helper)
    if item and shNode.GetItemDataNode(item) is None:
        shNode.RemoveItem(item)


def addSegmentation(segmentationNode, volumeNode, scene, target=None, name: str = ""):
    """Put a finished segmentation into the scene: into ``target`` (replacing its segments) or as a new
    node; the input becomes reference geometry and source volume (the Segment Editor picks it up)."""
    if target is not None:
        target.GetSegmentation().DeepCopy(segmentationNode.GetSegmentation())
        target.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        # The segments are in the input's local coordinates: follow the input's transform.
        target.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        segmentationNode = target
        if target.GetDisplayNode() is None:
            target.CreateDefaultDisplayNodes()
    else:
        # A new node per run unless the caller chose one: never the segments of another volume.
        name = scene.GenerateUniqueName(name or f"{volumeNode.GetName()} segmentation")
        placeInScene(segmentationNode, volumeNode, scene, name)
    segmentationNode.SetNodeReferenceID(
        segmentationNode.GetReferenceImageGeometryReferenceRole(), volumeNode.GetID()
    )
    return segmentationNode


def addVolume(volumeNode, referenceNode, scene, name: str, what: str):
    """Add an engine output volume on ``referenceNode``'s grid, displayed like the reference."""
    assertSameGeometry(referenceNode, volumeNode, what)
    placeInScene(volumeNode, referenceNode, scene, name)
    display, reference = volumeNode.GetDisplayNode(), referenceNode.GetDisplayNode()
    if display is not None and reference is not None:
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(reference.GetWindow(), reference.GetLevel())
        if reference.GetColorNodeID():
            display.SetAndObserveColorNodeID(reference.GetColorNodeID())
    return volumeNode


def showSegmentation3D(segmentationNode, show: bool = True) -> None:
    """Closed-surface representation on (3-D view) or off."""
    if show:
        segmentationNode.CreateClosedSurfaceRepresentation()
    else:
        segmentationNode.RemoveClosedSurfaceRepresentation()
    display: Any | None = segmentationNode.GetDisplayNode()
    if display is not None:
        display.SetVisibility3D(show)


def comparisonLayoutXml(viewNames: tuple[str, str, str]) -> str:
    """Three axial slice views side by side (input, masked input, reconstruction)."""
    items = "".join(
        f'<item><view class="vtkMRMLSliceNode" singletontag="{name}">'
        f'<property name="orientation" action="default">Axial</property>'
        f'<property name="viewlabel" action="default">{label}</property>'
        f'<property name="viewcolor" action="default">{color}</property></view></item>'
        for name, label, color in zip(viewNames, ("I", "M", "R"), ("#F34A33", "#EDD54C", "#6EB04B"))
    )
    return f'<layout type="horizontal">{items}</layout>'


COMPARISON_VIEWS = ("MambaMIMInput", "MambaMIMMasked", "MambaMIMReconstruction")
COMPARISON_LAYOUT_ID = 5801


def applicationSliceLogics() -> list:
    """The slice logics of the running application's views; none without the application."""
    app = getattr(slicer, "app", None)
    if app is None:
        return []
    logics = app.applicationLogic().GetSliceLogics()
    return [logics.GetItemAsObject(i) for i in range(logics.GetNumberOfItems())]


def _fit(sliceLogics, layoutNames=None) -> None:
    for logic in sliceLogics:
        if layoutNames is None or logic.GetSliceNode().GetLayoutName() in layoutNames:
            logic.FitSliceToAll()


def showVolumeInSliceViews(scene, volumeNode, sliceLogics=None) -> None:
    """Show ``volumeNode`` (the volume that was segmented, not whatever is selected now) as the
    background of every slice view, fitted to it."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        if composite.GetLayoutName() not in COMPARISON_VIEWS:
            composite.SetBackgroundVolumeID(volumeNode.GetID())
    _fit(applicationSliceLogics() if sliceLogics is None else sliceLogics)


class ComparisonLayout:
    """Input, masked input and reconstruction side by side, linked and fitted; the layout that was
    shown before can be restored."""

    def __init__(self) -> None:
        self.previousArrangement: int | None = None

    def show(self, scene, volumeNodes: tuple[Any, Any, Any], sliceLogics=None) -> None:
        layoutNode = scene.GetSingletonNode("vtkMRMLLayoutNode", "vtkMRMLLayoutNode")
        if layoutNode is not None:  # none without the application (scripts, tests)
            if not layoutNode.IsLayoutDescription(COMPARISON_LAYOUT_ID):
                layoutNode.AddLayoutDescription(COMPARISON_LAYOUT_ID, comparisonLayoutXml(COMPARISON_VIEWS))
            if layoutNode.GetViewArrangement() != COMPARISON_LAYOUT_ID:
                self.previousArrangement = layoutNode.GetViewArrangement()
            layoutNode.SetViewArrangement(COMPARISON_LAYOUT_ID)
        composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        for index in range(composites.GetNumberOfItems()):
            composite = composites.GetItemAsObject(index)
            if composite.GetLayoutName() in COMPARISON_VIEWS:
                volume = volumeNodes[COMPARISON_VIEWS.index(composite.GetLayoutName())]
                composite.SetBackgroundVolumeID(volume.GetID())
                composite.SetForegroundVolumeID(None)
                composite.SetLabelVolumeID(None)
                composite.SetLinkedControl(True)
        logics = [
            logic
            for logic in (applicationSliceLogics() if sliceLogics is None else sliceLogics)
            if logic.GetSliceNode().GetLayoutName() in COMPARISON_VIEWS
        ]
        _fit(logics)
        for logic in logics[1:]:  # the same slice side by side (linking alone may not have run yet)
            logic.SetSliceOffset(logics[0].GetSliceOffset())

    @property
    def canRestore(self) -> bool:
        return self.previousArrangement is not None

    def restore(self, scene) -> bool:
        """Back to the layout shown before the comparison; False when there is none to go back to."""
        layoutNode = scene.GetSingletonNode("vtkMRMLLayoutNode", "vtkMRMLLayoutNode")
        if layoutNode is None or self.previousArrangement is None:
            return False
        layoutNode.SetViewArrangement(self.previousArrangement)
        self.previousArrangement = None
        return True
