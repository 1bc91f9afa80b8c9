"""MambaMIM Segmenter: segment CT/MRI with HyMamba / Taming-Mambas models and view MambaMIM
masked-input reconstructions. Thin Slicer layer: the work is in MambaMIMSegmenterLib (Qt-free) and
the engine runs in a child process, so Slicer stays responsive and a run can be cancelled.

Supported: Slicer 5.10 and newer (Python 3.12). On an older Slicer the module says so when opened."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from MambaMIMSegmenterLib import compatibility, dependencies, diagnostics
from MambaMIMSegmenterLib import logic as libLogic
from MambaMIMSegmenterLib.progress import formatSeconds
from MambaMIMSegmenterLib.registry import ModelRegistry
from MambaMIMSegmenterLib.resources import resourcePath
from MambaMIMSegmenterLib.results import showSegmentation3D, showVolumeInSliceViews
from MambaMIMSegmenterLib.runner import EngineCancelled, engineEnvironment
from MambaMIMSegmenterLib.tasks import TaskBusy, TaskSlot
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
            "package (Import model…). Requires " + compatibility.SUPPORTED_TEXT + " and the PyTorch "
            "extension; the optional CUDA kernels (mamba-ssm) are offered under Advanced."
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


class MambaMIMSegmenterLogic(ScriptedLoadableModuleLogic, libLogic.SegmenterLogic):
    """The library logic bound to Slicer's scene, temporary folder and settings."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        cacheDir = qt.QSettings().value(CACHE_SETTING) or str(libLogic.defaultCacheDir())
        registry = ModelRegistry(resourcePath("models.json"), Path(cacheDir))
        libLogic.SegmenterLogic.__init__(
            self, scene=slicer.mrmlScene, registry=registry, tempRoot=Path(slicer.app.temporaryPath)
        )

    def getParameterNode(self):
        return MambaMIMSegmenterParameterNode(super().getParameterNode())


class MambaMIMSegmenterWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: MambaMIMSegmenterLogic | None = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._tasks = TaskSlot()  # one background task at a time: engine run, download, install, probe
        self._dependenciesChecked = False
        self._lastSegmentation = None  # the latest result (Show 3D); never written into the selector
        self._overlap = libLogic.OverlapChoice()
        self._settingOverlap = False
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._pollTask)

    # -- setup ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MambaMIMSegmenter.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        unsupported = compatibility.unsupportedReason(slicer.app.applicationVersion)
        if unsupported:  # said once, when the module is opened; nothing else is set up
            self.ui.compatibilityLabel.text = unsupported
            self.ui.compatibilityLabel.visible = True
            for child in uiWidget.children():
                if isinstance(child, qt.QWidget) and child is not self.ui.compatibilityLabel:
                    child.enabled = False
            slicer.util.warningDisplay(unsupported, windowTitle="MambaMIM Segmenter")
            return
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MambaMIMSegmenterLogic()

        self.ui.cacheFolderPathLineEdit.currentPath = str(self.logic.registry.cacheDir)
        # Applied when editing finishes (or a folder is browsed), not on every keystroke.
        self.ui.cacheFolderPathLineEdit.comboBox().lineEdit().connect(
            "editingFinished()", self.onCacheFolderChanged
        )
        self.ui.cacheFolderPathLineEdit.connect("currentPathChanged(QString)", self.onCacheFolderBrowsed)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.show3DButton.connect("toggled(bool)", self.onShow3D)
        self.ui.reconstructButton.connect("clicked(bool)", self.onReconstructButton)
        self.ui.restoreLayoutButton.connect("clicked(bool)", self.onRestoreLayout)
        self.ui.downloadButton.connect("clicked(bool)", self.onDownloadButton)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.diagnosticsButton.connect("clicked(bool)", self.onDiagnostics)
        self.ui.installCudaKernelsButton.connect("clicked(bool)", self.onInstallCudaKernels)
        self.ui.overlapSliderWidget.connect("valueChanged(double)", self.onOverlapChanged)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.cudaKernelsLabel.text = dependencies.CUDA_KERNELS_HELP
        self.refreshModels()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelTask()
        self.removeObservers()

    def enter(self) -> None:
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelTask()
        self._lastSegmentation = None
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
            self._settingOverlap = True  # the GUI taking the stored values is not a user's choice
            try:
                self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            finally:
                self._settingOverlap = False
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self.onModelChanged()  # the slider shows the selected model's overlap
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        kind = self._tasks.kind
        busy = self._tasks.busy
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.text = "Cancel" if kind == "segment" else "Segment"
        self.ui.applyButton.enabled = (hasInput and not busy) or kind == "segment"
        self.ui.reconstructButton.text = "Cancel" if kind == "reconstruct" else "Reconstruct"
        self.ui.reconstructButton.enabled = (hasInput and not busy) or kind == "reconstruct"
        self.ui.downloadButton.text = "Cancel download" if kind == "download" else "Download"
        self.ui.downloadButton.enabled = kind == "download" or (not busy and self._selectedNeedsDownload())
        others = (self.ui.diagnosticsButton, self.ui.installCudaKernelsButton, self.ui.importModelButton)
        for button in others:
            button.enabled = not busy
        self.ui.restoreLayoutButton.enabled = self.logic.comparisonLayout.canRestore
        self.ui.show3DButton.enabled = self._resultSegmentation() is not None

    def _resultSegmentation(self):
        chosen = self._parameterNode.outputSegmentation if self._parameterNode else None
        return chosen or self._lastSegmentation

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

    def _selectedNeedsDownload(self) -> bool:
        entry = self._selectedEntry(self.ui.modelComboBox)
        try:
            return entry is not None and self.logic.registry.localPath(entry) is None
        except Exception:
            return False

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
        self._showModelOverlap(entry)
        self._updateButtons()

    def _showModelOverlap(self, entry) -> None:
        """The slider shows the card's overlap, which is used until the user moves the slider."""
        cardOverlap = self.logic.modelOverlap(entry)
        self._overlap.modelSelected(cardOverlap)
        if cardOverlap is not None and self._parameterNode is not None:
            self._settingOverlap = True
            try:
                self._parameterNode.overlap = cardOverlap
            finally:
                self._settingOverlap = False

    def onOverlapChanged(self, value: float) -> None:
        if not self._settingOverlap:
            self._overlap.userChanged(value)

    def onCacheFolderBrowsed(self, path: str) -> None:
        if not self.ui.cacheFolderPathLineEdit.comboBox().lineEdit().hasFocus():  # not typing
            self.onCacheFolderChanged()

    def onCacheFolderChanged(self) -> None:
        path = self.ui.cacheFolderPathLineEdit.currentPath
        if path and self.logic.setCacheDir(Path(path)):
            qt.QSettings().setValue(CACHE_SETTING, path)
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
        if self._tasks.kind == "download":
            self._cancelTask()
            return
        entry = self._selectedEntry(self.ui.modelComboBox)
        if entry is not None:
            self._download(entry, then=None)

    def _download(self, entry, then) -> None:
        try:
            download = self.logic.registry.startDownload(entry)
        except Exception as exc:
            self._fail(f"The download of {entry.title} could not start:\n{exc}")
            return
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
    def _engineEnvironment(self):
        return engineEnvironment(self.logic.enginePaths)

    def _ensureDependencies(self, then) -> None:
        """Ask the engine's interpreter what is missing, confirm once, install, then continue."""
        if self._dependenciesChecked:
            then()
            return
        try:
            check = dependencies.startDependencyCheck(
                self.logic.python, self._engineEnvironment(), resourcePath("pyproject.toml")
            )
        except Exception as exc:
            self._fail(f"Could not check the Python packages the engine needs:\n{exc}")
            return
        self._startTask("check", check, lambda task: self._dependenciesPlanned(task, then))

    def _dependenciesPlanned(self, check, then) -> None:
        if check.error is not None:
            self._fail(f"Could not check the Python packages the engine needs:\n{check.error}")
            return
        plan = check.result
        if not plan.needed:
            self._dependenciesChecked = True
            then()
            return
        if plan.torchMissing:
            slicer.util.errorDisplay(plan.confirmationText(), windowTitle="PyTorch is required")
            return
        text = plan.confirmationText()
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle="Install Python packages"):
            return
        self._install(plan.missing, plan.torchVersion, "Installing: " + " ".join(plan.missing), then)

    def _install(self, arguments, torchVersion, description, then) -> None:
        try:
            constraints = dependencies.writeConstraints(self.logic.scratchDir(), torchVersion)
            self._log(description)
            with slicer.util.WaitCursor():  # Slicer 5.10 installs in the foreground
                install = dependencies.startInstall(arguments, constraints, description=description)
        except Exception as exc:
            self._fail(f"Installing the Python packages failed:\n{exc}")
            return
        self._startTask("install", install, lambda task: self._installFinished(task, then))

    def _installFinished(self, install, then) -> None:
        if install.error is not None:
            self._fail(f"Installing the Python packages failed: {install.error}")
            return
        self._dependenciesChecked = False  # checked again (by the engine) before the next run
        if then is not None:
            then()

    def onInstallCudaKernels(self) -> None:
        """The optional CUDA kernels: never needed to segment; offered here with what they need."""
        compiler = dependencies.findCudaCompiler()
        text = dependencies.CUDA_KERNELS_HELP + "\n\n" + (
            f"CUDA compiler found: {compiler}. Build and install them now?"
            if compiler
            else "No CUDA compiler (nvcc) was found on PATH or in CUDA_HOME, so the build would fail. "
            "Install the CUDA toolkit matching your PyTorch build first."
        )
        if not compiler:
            slicer.util.infoDisplay(text, windowTitle="Optional CUDA kernels")
            return
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle="Optional CUDA kernels"):
            return
        check = dependencies.startDependencyCheck(
            self.logic.python, self._engineEnvironment(), resourcePath("pyproject.toml")
        )
        try:
            plan = check.wait(timeout=60)
        except Exception as exc:
            self._fail(f"Could not check the installed PyTorch:\n{exc}")
            return
        if plan.torchMissing:
            slicer.util.errorDisplay(plan.confirmationText(), windowTitle="PyTorch is required")
            return
        arguments = dependencies.cudaKernelRequirements(resourcePath("pyproject.toml"))
        self._install(arguments, plan.torchVersion, "Building the optional CUDA kernels…", None)

    # -- segmentation ------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._tasks.kind == "segment":
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
                overlap=self._overlap.argument,
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
        self._lastSegmentation = segmentation
        elapsed = formatSeconds(job.elapsedSeconds)
        self.ui.statusLabel.text = (
            f"Done in {elapsed}: {segmentation.GetSegmentation().GetNumberOfSegments()} segments."
        )
        self._log(f"Segmentation {segmentation.GetName()} created in {elapsed}.")
        showVolumeInSliceViews(slicer.mrmlScene, job.inputVolume)  # the segmented volume
        if self.ui.show3DButton.checked:
            showSegmentation3D(segmentation, True)
        self._updateButtons()

    def onShow3D(self, show: bool) -> None:
        segmentation = self._resultSegmentation()
        if segmentation is not None:
            showSegmentation3D(segmentation, show)

    # -- reconstruction ----------------------------------------------------------------------------
    def onReconstructButton(self) -> None:
        if self._tasks.kind == "reconstruct":
            self._cancelTask()
            return
        self._ensureDependencies(self._startReconstruction)

    def _startReconstruction(self) -> None:
        p = self._parameterNode
        path = self.ui.checkpointPathLineEdit.currentPath
        checkpoint = Path(path) if path else self._selectedEntry(self.ui.checkpointComboBox)
        if checkpoint is None:
            slicer.util.errorDisplay("Select a MambaMIM checkpoint from the list or a checkpoint file.")
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
        self._updateButtons()

    def onRestoreLayout(self) -> None:
        self.logic.comparisonLayout.restore(slicer.mrmlScene)
        self._updateButtons()

    # -- diagnostics -------------------------------------------------------------------------------
    def onDiagnostics(self) -> None:
        try:
            task = diagnostics.startDiagnostics(self.logic.python, self._engineEnvironment())
        except Exception as exc:
            self._fail(f"Diagnostics could not start the engine's Python:\n{exc}")
            return
        self._startTask("diagnostics", task, self._diagnosticsFinished)

    def _diagnosticsFinished(self, task) -> None:
        version = f"{slicer.app.applicationVersion} (revision {slicer.app.revision})"
        text = diagnostics.diagnosticsText(task, version)
        qt.QApplication.clipboard().setText(text)
        self.ui.logTextEdit.setPlainText(text)
        self.ui.statusLabel.text = "Diagnostics copied to the clipboard."

    # -- task polling (the GUI thread only polls; the work is elsewhere) ----------------------------
    def _startTask(self, kind: str, task, onDone) -> None:
        try:
            self._tasks.start(kind, task, onDone)
        except TaskBusy as exc:
            slicer.util.infoDisplay(str(exc).capitalize() + ".", windowTitle="MambaMIM Segmenter")
            return
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = task.statusText
        self._timer.start()
        self._updateButtons()

    def _pollTask(self) -> None:
        task = self._tasks.task
        if task is None:
            self._timer.stop()
            return
        try:
            finished = self._tasks.poll()
        finally:
            if not self._tasks.busy:
                self._timer.stop()
            self._updateButtons()
        if not finished:
            if task.fraction is not None:
                self.ui.progressBar.value = round(100 * task.fraction)
            self.ui.statusLabel.text = task.statusText
            elapsed = getattr(task, "elapsedSeconds", None)
            self.ui.elapsedLabel.text = f"Elapsed: {formatSeconds(elapsed)}" if elapsed is not None else ""

    def _cancelTask(self) -> None:
        """Stop the running task; its completion handler is not called, so nothing follows it."""
        if self._tasks.cancel() is None:
            return
        self._timer.stop()
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
    """Runs inside Slicer: real inference with the tiny built-in demo model on a generated volume.
    Skips, with the reason, where PyTorch or the engine's packages are not installed (extension build
    servers): the module never installs packages during a test."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        import unittest

        self.setUp()
        try:
            self.test_SegmentGeneratedVolume()
        except unittest.SkipTest as skipped:
            self.delayDisplay(f"Test skipped: {skipped}")

    def test_SegmentGeneratedVolume(self):
        import numpy as np

        logic = MambaMIMSegmenterLogic()
        notReady = dependencies.engineNotReady(
            logic.python, engineEnvironment(logic.enginePaths), resourcePath("pyproject.toml")
        )
        if notReady:
            self.skipTest(notReady)

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
