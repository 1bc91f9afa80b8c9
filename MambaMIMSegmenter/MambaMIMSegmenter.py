"""MambaMIM Segmenter: segment CT/MRI with HyMamba / Taming-Mambas models and view MambaMIM
masked-input reconstructions. Thin Slicer layer: the work is in MambaMIMSegmenterLib (Qt-free) and
the engine runs in a child process, so Slicer stays responsive and a run can be cancelled."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
import vtk
from MambaMIMSegmenterLib import dependencies, diagnostics
from MambaMIMSegmenterLib import logic as libLogic
from MambaMIMSegmenterLib.download import Download
from MambaMIMSegmenterLib.progress import formatSeconds
from MambaMIMSegmenterLib.registry import ModelRegistry
from MambaMIMSegmenterLib.results import showSegmentation3D
from MambaMIMSegmenterLib.runner import EngineCancelled, ProcessRunner, engineEnvironment
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

CACHE_SETTING = "MambaMIMSegmenter/ModelCacheFolder"
MODEL_SETTING = "MambaMIMSegmenter/LastModel"
POLL_MS = 100


class MambaMIMSegmenter(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MambaMIM Segmenter"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MambaMIM Segmenter developers"]
        self.parent.helpText = (
            "Segments organs in CT or MRI volumes with Mamba-based networks (HyMamba, SegMamba and the "
            "Taming-Mambas variants) and shows how a MambaMIM pre-trained model reconstructs a masked copy "
            "of the scan. Inference runs in a separate process: keep working, or press Cancel at any time. "
            "Models come from a registry (verified by SHA-256, cached for offline use) or from a local "
            "package (Import model…)."
        )
        self.parent.acknowledgementText = (
            "Methods: F. Tang et al., <i>MambaMIM: Pre-training Mamba with State Space Token Interpolation "
            "and its Application to Medical Image Segmentation</i>, arXiv:2408.08070; and L. Lumetti et al., "
            "<i>Taming Mambas for Voxel Level 3D Medical Image Segmentation</i>, arXiv:2410.15496. "
            "Built on 3D Slicer, PyTorch and MONAI."
        )


@parameterNodeWrapper
class MambaMIMSegmenterParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    fast: bool = False
    overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.5
    outputSegmentation: vtkMRMLSegmentationNode
    maskRatio: Annotated[float, WithinRange(0.25, 0.9)] = 0.75
    seed: Annotated[int, WithinRange(0, 999999)] = 0
    checkpointFile: Path = Path()


class MambaMIMSegmenterLogic(ScriptedLoadableModuleLogic, libLogic.MambaMIMSegmenterLogic):
    """The library logic bound to Slicer's scene, temporary folder and settings."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        cacheDir = qt.QSettings().value(CACHE_SETTING) or str(libLogic.defaultCacheDir())
        registry = ModelRegistry(libLogic.resourcePath("models.json"), Path(cacheDir))
        libLogic.MambaMIMSegmenterLogic.__init__(
            self, scene=slicer.mrmlScene, registry=registry, tempRoot=Path(slicer.app.temporaryPath)
        )

    def getParameterNode(self):
        return MambaMIMSegmenterParameterNode(super().getParameterNode())


class MambaMIMSegmenterWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[MambaMIMSegmenterLogic] = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None  # EngineJob, Download or ProcessRunner currently polled
        self._kind: Optional[str] = None  # "segment", "reconstruct", "download" or "diagnostics"
        self._dependenciesChecked = False
        self._taskDone = None  # called with the task when it finishes
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._pollTask)

    # -- setup ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MambaMIMSegmenter.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MambaMIMSegmenterLogic()

        self.ui.cacheFolderPathLineEdit.currentPath = str(self.logic.registry.cacheDir)
        self.ui.cacheFolderPathLineEdit.connect("currentPathChanged(QString)", self.onCacheFolderChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.show3DButton.connect("toggled(bool)", self.onShow3D)
        self.ui.reconstructButton.connect("clicked(bool)", self.onReconstructButton)
        self.ui.downloadButton.connect("clicked(bool)", self.onDownloadButton)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.diagnosticsButton.connect("clicked(bool)", self.onDiagnostics)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.refreshModels()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelTask()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelTask()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        busy = self._task is not None
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.text = "Cancel" if busy and self._taskKind == "segment" else "Segment"
        self.ui.applyButton.enabled = (hasInput and not busy) or (busy and self._taskKind == "segment")
        self.ui.reconstructButton.text = (
            "Cancel" if busy and self._taskKind == "reconstruct" else "Reconstruct"
        )
        self.ui.reconstructButton.enabled = (hasInput and not busy) or (
            busy and self._taskKind == "reconstruct"
        )
        self.ui.downloadButton.text = (
            "Cancel download" if busy and self._taskKind == "download" else "Download"
        )
        output = self._parameterNode.outputSegmentation if self._parameterNode else None
        self.ui.show3DButton.enabled = output is not None

    # -- models ------------------------------------------------------------------------------------
    def refreshModels(self) -> None:
        last = qt.QSettings().value(MODEL_SETTING)
        for combo, task in (
            (self.ui.modelComboBox, "segmentation"),
            (self.ui.checkpointComboBox, "reconstruction"),
        ):
            combo.blockSignals(True)
            combo.clear()
            try:
                for entry in self.logic.registry.entries(task):
                    combo.addItem(entry.title, entry.id)
                    combo.setItemData(combo.count - 1, entry.describe(), qt.Qt.ToolTipRole)
            except Exception as exc:
                slicer.util.errorDisplay(f"The model registry could not be read:\n{exc}")
            combo.blockSignals(False)
        index = self.ui.modelComboBox.findData(last) if last else -1
        self.ui.modelComboBox.setCurrentIndex(max(index, 0))
        self.onModelChanged()

    def _selectedEntry(self, combo):
        modelId = combo.currentData
        return self.logic.registry.get(modelId) if modelId else None

    def onModelChanged(self, index=None) -> None:
        entry = self._selectedEntry(self.ui.modelComboBox)
        if entry is None:
            self.ui.modelInfoLabel.text = "No model available: import one (Import model…)."
            return
        qt.QSettings().setValue(MODEL_SETTING, entry.id)
        try:
            available = self.logic.registry.localPath(entry) is not None
        except Exception as exc:  # e.g. a bundled model whose files fail verification
            self.ui.modelInfoLabel.text = f"{entry.id}: {exc}"
            return
        labels = ", ".join(label["name"] for label in entry.labels[:6]) + (
            " …" if len(entry.labels) > 6 else ""
        )
        status = "ready" if available else "not downloaded yet"
        self.ui.modelInfoLabel.text = (
            f"{entry.describe()}\nLicence: {entry.license}. Labels: {labels}. ({status})"
        )
        self.ui.downloadButton.enabled = not available

    def onCacheFolderChanged(self, path: str) -> None:
        if path:
            qt.QSettings().setValue(CACHE_SETTING, path)
            self.logic.registry = ModelRegistry(self.logic.registry.registryFile, Path(path))
            self.refreshModels()

    def onImportModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.parent, "Import a model package folder")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("Importing the model failed.", waitCursor=True):
            entry = self.logic.registry.importModel(Path(folder))
            self.refreshModels()
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.findData(entry.id))
            self._log(f"Imported model {entry.title} into {self.logic.registry.cacheDir}")

    def onDownloadButton(self) -> None:
        if self._taskKind == "download":
            self._cancelTask()
            return
        entry = self._selectedEntry(self.ui.modelComboBox)
        if entry is not None:
            self._download(entry, then=None)

    def _download(self, entry, then) -> None:
        with slicer.util.tryWithErrorDisplay("The download could not start.", waitCursor=False):
            download = self.logic.registry.startDownload(entry)
            self._log(f"Downloading {entry.title} from {entry.url}")
            self._startTask("download", download, lambda task: self._downloadFinished(entry, task, then))

    def _downloadFinished(self, entry, download, then) -> None:
        if download.error is not None:
            self._fail(f"Download of {entry.title} failed:\n{download.error}")
            return
        self._log(f"Downloaded and verified {entry.title}.")
        self.onModelChanged()
        if then is not None:
            then()

    # -- dependencies ------------------------------------------------------------------------------
    def _ensureDependencies(self, then) -> None:
        """One confirmation listing what is missing; install without blocking; then continue."""
        if self._dependenciesChecked:
            then()
            return
        plan = dependencies.planInstall(libLogic.resourcePath("pyproject.toml"))
        if not plan.needed:
            self._dependenciesChecked = True
            then()
            return
        if plan.torchMissing:
            slicer.util.errorDisplay(plan.confirmationText(), windowTitle="PyTorch is required")
            return
        if not slicer.util.confirmOkCancelDisplay(
            plan.confirmationText(), windowTitle="Install Python packages"
        ):
            return
        _, install = dependencies.chooseInstaller()
        self._log("Installing: " + " ".join(plan.missing))

        def done(returnCode: int) -> None:
            if returnCode != 0:
                self._fail("Installing the Python packages failed; see the log (Python console) for details.")
            else:
                self._dependenciesChecked = True
                then()

        with slicer.util.tryWithErrorDisplay("Installing the Python packages failed.", waitCursor=True):
            install(plan.missing, done)

    # -- segmentation ------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._taskKind == "segment":
            self._cancelTask()
            return
        self._ensureDependencies(self._segmentWhenModelReady)

    def _segmentWhenModelReady(self) -> None:
        entry = self._selectedEntry(self.ui.modelComboBox)
        if entry is None:
            slicer.util.errorDisplay("Select a model first (or import one).")
            return
        try:
            ready = self.logic.registry.localPath(entry) is not None
        except Exception as exc:
            self._fail(str(exc))
            return
        if ready:
            self._startSegmentation(entry)
        else:
            self._download(entry, then=lambda: self._startSegmentation(entry))

    def _startSegmentation(self, entry) -> None:
        p = self._parameterNode
        self.ui.logTextEdit.clear()
        try:
            job = self.logic.startSegmentation(
                p.inputVolume,
                entry,
                p.device,
                fast=p.fast,
                overlap=p.overlap,
                outputSegmentationNode=p.outputSegmentation,
                onProgress=self._showProgress,
                onLog=self._log,
            )
        except Exception as exc:
            self._fail(str(exc))
            return
        self._log(f"Segmenting {p.inputVolume.GetName()} with {entry.title} on {p.device}…")
        self._startTask("segment", job, self._segmentationFinished)

    def _segmentationFinished(self, job) -> None:
        if self._reportFailure(job):
            return
        segmentation = job.result
        self._parameterNode.outputSegmentation = segmentation
        elapsed = formatSeconds(job.elapsedSeconds)
        self.ui.statusLabel.text = (
            f"Done in {elapsed}: {segmentation.GetSegmentation().GetNumberOfSegments()} segments."
        )
        self._log(f"Segmentation {segmentation.GetName()} created in {elapsed}.")
        slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume, fit=True)
        if self.ui.show3DButton.checked:
            showSegmentation3D(segmentation, True)

    def onShow3D(self, show: bool) -> None:
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        if segmentation is not None:
            showSegmentation3D(segmentation, show)

    # -- reconstruction ----------------------------------------------------------------------------
    def onReconstructButton(self) -> None:
        if self._taskKind == "reconstruct":
            self._cancelTask()
            return
        self._ensureDependencies(self._startReconstruction)

    def _startReconstruction(self) -> None:
        p = self._parameterNode
        checkpoint = (
            p.checkpointFile
            if p.checkpointFile.is_file()
            else self._selectedEntry(self.ui.checkpointComboBox)
        )
        if checkpoint is None:
            slicer.util.errorDisplay(
                "Select a MambaMIM checkpoint from the list or choose a checkpoint file."
            )
            return
        self.ui.logTextEdit.clear()
        try:
            job = self.logic.startReconstruction(
                p.inputVolume,
                checkpoint,
                p.maskRatio,
                p.seed,
                p.device,
                onProgress=self._showProgress,
                onLog=self._log,
            )
        except Exception as exc:
            self._fail(str(exc))
            return
        self._log(
            f"Reconstructing {p.inputVolume.GetName()}, {round(100 * p.maskRatio)} % of the patches masked…"
        )
        self._startTask("reconstruct", job, self._reconstructionFinished)

    def _reconstructionFinished(self, job) -> None:
        if self._reportFailure(job):
            return
        masked, reconstruction = job.result
        self.ui.statusLabel.text = f"Reconstruction done in {formatSeconds(job.elapsedSeconds)}."
        self._log(f"Created {masked.GetName()} and {reconstruction.GetName()}.")

    # -- diagnostics -------------------------------------------------------------------------------
    def onDiagnostics(self) -> None:
        if self._task is not None:
            slicer.util.infoDisplay("Wait for the current run to finish (or cancel it) first.")
            return
        runner = ProcessRunner(
            [self.logic.python, "-c", diagnostics.ENGINE_PROBE], env=engineEnvironment(self.logic.enginePaths)
        )
        runner.start()
        self._startTask("diagnostics", runner, self._diagnosticsFinished)

    def _diagnosticsFinished(self, runner) -> None:
        engine, error = {}, ""
        try:
            engine = diagnostics.parseProbe(runner.result().outputs)
        except Exception as exc:
            error = str(exc)
        version = f"{slicer.app.applicationVersion} (revision {slicer.app.revision})"
        text = diagnostics.formatDiagnostics(diagnostics.localInfo(version), engine, error)
        qt.QApplication.clipboard().setText(text)
        self.ui.logTextEdit.setPlainText(text)
        self.ui.statusLabel.text = "Diagnostics copied to the clipboard."

    # -- task polling (the GUI thread only polls; the work is elsewhere) ----------------------------
    @property
    def _taskKind(self) -> Optional[str]:
        return self._kind if self._task is not None else None

    def _startTask(self, kind: str, task, onDone) -> None:
        self._task, self._kind, self._taskDone = task, kind, onDone
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Starting…"
        self._timer.start()
        self._updateButtons()

    def _pollTask(self) -> None:
        task = self._task
        if task is None:
            self._timer.stop()
            return
        if isinstance(task, ProcessRunner):
            task.poll()
            finished = task.returncode is not None
        elif isinstance(task, Download):
            if task.bytesTotal:
                self.ui.progressBar.value = round(100 * task.bytesDone / task.bytesTotal)
            self.ui.statusLabel.text = f"Downloading… {task.bytesDone / 1e6:.1f} MB"
            finished = task.done
        else:
            finished = task.poll()
            self.ui.elapsedLabel.text = f"Elapsed: {formatSeconds(task.elapsedSeconds)}"
        if finished:
            self._finishTask()

    def _finishTask(self) -> None:
        task, onDone = self._task, self._taskDone
        self._task = self._taskDone = None
        self._timer.stop()
        self._updateButtons()
        onDone(task)

    def _cancelTask(self) -> None:
        """Stop the running task; its completion handler is not called, so nothing follows it."""
        if self._task is None:
            return
        task = self._task
        self._task = self._taskDone = None
        self._timer.stop()
        task.cancel()  # engine: kills the process tree and deletes its files; download: keeps .part
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Cancelled; nothing was added to the scene."
        self._log("Cancelled.")
        self._updateButtons()

    def _reportFailure(self, job) -> bool:
        if job.error is None:
            return False
        if isinstance(job.error, EngineCancelled):
            self.ui.statusLabel.text = "Cancelled; nothing was added to the scene."
            self.ui.progressBar.value = 0
        else:
            self._fail(str(job.error))
        return True

    def _showProgress(self, event) -> None:
        self.ui.progressBar.value = round(100 * event.fraction)
        self.ui.statusLabel.text = event.describe()

    def _log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def _fail(self, message: str) -> None:
        self.ui.statusLabel.text = "Failed; nothing was added to the scene."
        self._log(message)
        slicer.util.errorDisplay(message, windowTitle="MambaMIM Segmenter")


class MambaMIMSegmenterTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: real inference with the tiny built-in demo model on a generated volume."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentGeneratedVolume()

    def test_SegmentGeneratedVolume(self):
        import numpy as np

        self.delayDisplay("Generating a CT-like phantom")
        k, j, i = np.mgrid[:40, :48, :56]
        body = ((i - 28) / 24.0) ** 2 + ((j - 24) / 18.0) ** 2 < 1.0
        organ = ((i - 20) / 8.0) ** 2 + ((j - 22) / 7.0) ** 2 + ((k - 20) / 9.0) ** 2 < 1.0
        array = np.where(body, 40, -1000).astype(np.int16)
        array[organ] = 120
        ijkToRas = vtk.vtkMatrix4x4()
        for axis, spacing in enumerate((-3.0, -3.0, 3.0)):  # LPS-like, as DICOM volumes load
            ijkToRas.SetElement(axis, axis, spacing)
        volume = slicer.util.addVolumeFromArray(array, ijkToRAS=ijkToRas, name="phantom")

        logic = MambaMIMSegmenterLogic()
        entry = logic.registry.entries("segmentation")[0]
        self.delayDisplay(f"Segmenting with {entry.title} (child process)")
        segmentation = logic.segment(volume, entry, "cpu", waitForCompletion=True, fast=True)

        names = [
            segmentation.GetSegmentation().GetNthSegment(n).GetName()
            for n in range(segmentation.GetSegmentation().GetNumberOfSegments())
        ]
        self.assertEqual(sorted(names), sorted(label["name"] for label in entry.labels))
        labelmap = slicer.util.arrayFromSegmentBinaryLabelmap(
            segmentation, segmentation.GetSegmentation().GetNthSegmentID(0), volume
        )
        self.assertEqual(labelmap.shape, array.shape)
        self.assertEqual(segmentation.GetNodeReferenceID("referenceImageGeometryRef"), volume.GetID())

        self.delayDisplay("Cancel leaves the scene untouched")
        before = slicer.mrmlScene.GetNumberOfNodes()
        job = logic.segment(volume, entry, "cpu", waitForCompletion=False)
        job.cancel()
        self.assertIsNotNone(job.error)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Test passed")
