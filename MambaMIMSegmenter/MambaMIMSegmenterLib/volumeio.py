"""MRML volume nodes ⇄ files for the engine, keeping the exact geometry.

Volumes travel as uncompressed NRRD written and read by Slicer's own archetype storage node, which
stores the full IJK-to-RAS matrix (spacing, origin and any oblique / LPS direction) as NRRD
``space directions``; the engine (SimpleITK) returns label maps on the same grid, and
:func:`assertSameGeometry` refuses anything else instead of silently resampling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk

from .enginepath import importEngineModule

# Geometry tolerance (mm, and unit-less for direction cosines): NRRD stores doubles in text.
GEOMETRY_TOLERANCE = 1e-4


class InputError(ValueError):
    """The selected input cannot be processed; the message says what to select instead."""


def validateInputVolume(volumeNode) -> None:
    """Refuse anything but a 3-D single-component scalar volume with image data."""
    if volumeNode is None:
        raise InputError("No input volume is selected. Load a CT or MRI volume and select it as input.")
    name = volumeNode.GetName()
    if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f'"{name}" is a label map. Select the scanned image (a scalar volume) as input.')
    vectorLike = volumeNode.IsA("vtkMRMLVectorVolumeNode") or volumeNode.IsA("vtkMRMLTensorVolumeNode")
    if vectorLike or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(
            f'"{name}" is a {volumeNode.GetClassName()}, not a scalar volume. '
            "Select a single-channel CT or MRI volume."
        )
    image = volumeNode.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f'"{name}" has no image data.')
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f'"{name}" has {image.GetNumberOfScalarComponents()} components per voxel '
            "(a 4-D or colour volume); "
            "select a single 3-D volume (for a time series, pick one frame)."
        )
    dims = image.GetDimensions()
    if min(dims) < 2:
        raise InputError(
            f'"{name}" is 2-D ({dims[0]}×{dims[1]}×{dims[2]} voxels); the models need a 3-D volume.'
        )


def ijkToRas(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])


def assertSameGeometry(volumeNode, otherNode, what: str) -> None:
    """Raise when ``otherNode`` (a volume node read from the engine) is not on ``volumeNode``'s grid."""
    dims, other = volumeNode.GetImageData().GetDimensions(), otherNode.GetImageData().GetDimensions()
    if dims != other:
        raise ValueError(f"the engine returned the {what} on a {other} grid, but the input has {dims} voxels")
    difference = np.abs(ijkToRas(volumeNode) - ijkToRas(otherNode)).max()
    if difference > GEOMETRY_TOLERANCE * max(1.0, np.abs(ijkToRas(volumeNode)).max()):
        raise ValueError(
            f"the engine returned the {what} with a different geometry "
            f"(IJK-to-RAS differs by {difference:.3g})"
        )


def writeVolume(volumeNode, path: Path) -> Path:
    """Write ``volumeNode`` (ignoring parent transforms, as the result goes under the same transform)."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(0)
    if not storage.WriteData(volumeNode):
        raise OSError(f"could not write volume {volumeNode.GetName()!r} to {path}")
    return path


def readVolume(path: Path, labelmap: bool, name: str = ""):
    """Read a file into a new volume node that is *not* in any scene (added only when complete)."""
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name or Path(path).name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if labelmap:
        storage.SetCenterImage(False)
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise OSError(f"could not read the engine output {path}")
    return node


def volumeArray(volumeNode) -> np.ndarray:
    """Voxel values as a (K, J, I) numpy view (no copy)."""
    from vtk.util import numpy_support

    image = volumeNode.GetImageData()
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])


def guessModality(volumeNode) -> str:
    """The engine's rule (``mambamim.infer.modality``) applied to a volume node: its DICOM Modality tag
    (on the node or its subject-hierarchy item) when present, else its intensities."""
    tags = [volumeNode.GetAttribute("DICOM.Modality")]
    scene = volumeNode.GetScene()
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene) if scene is not None else None
    if shNode is not None and shNode.GetItemByDataNode(volumeNode):
        tags.append(shNode.GetItemAttribute(shNode.GetItemByDataNode(volumeNode), "DICOM.Modality"))
    tag = next((t for t in tags if t and t.strip()), None)
    return importEngineModule("infer.modality").guess_modality(volumeArray(volumeNode), tag)
