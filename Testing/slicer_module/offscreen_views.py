"""Slicer's slice and 3-D views without Qt: slicer-core's slice logic and displayable managers rendering
offscreen through EGL (Mesa), as the application's views do.

Like Slicer's qMRMLSliceView (and trame-slicer), a slice view is a renderer whose background is the
slice logic's composited image (an image actor) with the slice displayable managers (here the 2-D
segmentation one) drawing on top; a 3-D view is a renderer with the 3-D displayable managers. A view
renders only when :meth:`capture` is called, so building a scene costs no render per change.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Must be set before the first render window is created: offscreen EGL instead of an X display.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import slicer
import vtk
from vtk.util import numpy_support

SIZE = (256, 256)


class _View:
    def __init__(self, app, factoryClass, managers: list[str], size=SIZE):
        self.renderer = vtk.vtkRenderer()
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(*size)
        self.window.AddRenderer(self.renderer)
        # Displayable managers reach the window through its interactor (widgets, cursors).
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        self.interactor.Initialize()
        self.renders = 0
        self.window.AddObserver(vtk.vtkCommand.StartEvent, self._counted)
        factory = factoryClass.GetInstance()
        factory.SetMRMLApplicationLogic(app.appLogic)
        for name in managers:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)

    def _counted(self, *args) -> None:
        self.renders += 1

    def capture(self) -> np.ndarray:
        """Render once; the picture as (rows, columns, RGB) with row 0 at the top."""
        # A displayable manager catches up with a batch of scene changes (Slicer's BatchProcessState)
        # when its view node next changes, as the application's views do before they render.
        self.node.Modified()
        self.window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.ShouldRerenderOff()  # the render above is the only one
        grab.Update()
        image = grab.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
        return pixels[::-1].copy()


class SliceView(_View):
    """One slice view (Axial, Coronal or Sagittal) named like the application's ("Red", …)."""

    def __init__(self, app, name: str, orientation: str, size=SIZE):
        super().__init__(
            app,
            slicer.vtkMRMLSliceViewDisplayableManagerFactory,
            ["vtkMRMLSegmentationsDisplayableManager2D"],
            size,
        )
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(app.appLogic)
        app.appLogic.GetSliceLogics().AddItem(self.logic)
        self.logic.SetMRMLScene(app.scene)
        self.node = self.logic.AddSliceNode(name)
        self.node.SetOrientation(orientation)
        self.managers.SetMRMLDisplayableNode(self.node)
        self.logic.ResizeSliceNode(*size)
        # The composited slice image (RGBA 0-255, window/level already applied) drawn first, under
        # the displayable managers' actors (as the first overlay prop; a "background" 2-D actor would
        # be drawn over them here).
        self.mapper = vtk.vtkImageMapper()
        self.mapper.SetColorWindow(255)
        self.mapper.SetColorLevel(127.5)
        actor = vtk.vtkActor2D()
        actor.SetMapper(self.mapper)
        actor.GetProperty().SetDisplayLocationToForeground()
        props = self.renderer.GetViewProps()
        others = [props.GetItemAsObject(i) for i in range(props.GetNumberOfItems())]
        self.renderer.RemoveAllViewProps()
        for prop in (actor, *others):
            self.renderer.AddViewProp(prop)

    def capture(self) -> np.ndarray:
        # The slice logic replaces its output connection when the layers change: take the current one.
        self.mapper.SetInputConnection(self.logic.GetImageDataConnection())
        return super().capture()

    def rasOfPixels(self) -> np.ndarray:
        """RAS position of every pixel centre, as (rows, columns, 3), row 0 at the top."""
        width, height = self.window.GetSize()
        matrix = vtk.vtkMatrix4x4()
        matrix.DeepCopy(self.node.GetXYToRAS())
        xy_to_ras = np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])
        ys, xs = np.mgrid[height - 1 : -1 : -1, 0:width]
        points = np.stack([xs, ys, np.zeros_like(xs), np.ones_like(xs)], axis=-1).astype(float)
        return (points @ xy_to_ras.T)[..., :3]


class ThreeDView(_View):
    def __init__(self, app, size=SIZE):
        super().__init__(
            app,
            slicer.vtkMRMLThreeDViewDisplayableManagerFactory,
            ["vtkMRMLSegmentationsDisplayableManager3D", "vtkMRMLModelDisplayableManager"],
            size,
        )
        self.node = app.scene.AddNewNodeByClass("vtkMRMLViewNode", "View1")
        self.node.SetBoxVisible(False)
        self.node.SetAxisLabelsVisible(False)
        self.node.SetBackgroundColor(0, 0, 0)
        self.node.SetBackgroundColor2(0, 0, 0)
        self.renderer.SetBackground(0, 0, 0)
        self.managers.SetMRMLDisplayableNode(self.node)

    def lookFromAnterior(self) -> None:
        camera = self.renderer.GetActiveCamera()
        camera.SetPosition(0, 1, 0)
        camera.SetFocalPoint(0, 0, 0)
        camera.SetViewUp(0, 0, 1)
        self.renderer.ResetCamera()


def ijkOfRas(volumeNode, ras: np.ndarray) -> np.ndarray:
    """Nearest voxel index (I, J, K) of RAS points (…, 3)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetRASToIJKMatrix(matrix)
    ras_to_ijk = np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])
    homogeneous = np.concatenate([ras, np.ones((*ras.shape[:-1], 1))], axis=-1)
    return np.rint(homogeneous @ ras_to_ijk.T)[..., :3].astype(int)


def sampleVolume(array: np.ndarray, ijk: np.ndarray, outside=-1) -> np.ndarray:
    """``array`` (K, J, I) at voxel indices (…, 3: I, J, K); ``outside`` beyond its extent."""
    i, j, k = ijk[..., 0], ijk[..., 1], ijk[..., 2]
    inside = (
        (i >= 0) & (j >= 0) & (k >= 0) & (k < array.shape[0]) & (j < array.shape[1]) & (i < array.shape[2])
    )
    values = np.full(ijk.shape[:-1], outside, dtype=np.int64)
    values[inside] = array[k[inside], j[inside], i[inside]]
    return values


def savePng(pixels: np.ndarray, path: Path) -> Path:
    """Write (rows, columns, RGB) uint8 pixels, row 0 at the top, as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width, _ = pixels.shape
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, 1)
    flat = np.ascontiguousarray(pixels[::-1]).reshape(-1, 3)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True))
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()
    return path
