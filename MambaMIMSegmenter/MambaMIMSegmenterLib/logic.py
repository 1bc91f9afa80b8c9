"""SegmenterLogic: Qt-free, usable from the widget, the Python console and scripts.

    logic = SegmenterLogic()
    segmentation = logic.segment(volumeNode, "btcv-hymamba-demo", "auto")          # blocks
    job = logic.segment(volumeNode, "btcv-hymamba-demo", "auto", waitForCompletion=False)
    while not job.poll(): ...                                                        # GUI: a QTimer

Each run: validate the input → write it to a temporary NRRD → child process ``python -m mambamim
segment|reconstruct --progress json`` → read the outputs into nodes built outside the scene → add
them. Cancel kills the process tree; errors and cancels leave the scene untouched; the temporary
folder is always deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .enginepath import defaultEnginePaths, importEngineModule
from .progress import ProgressEvent
from .registry import ModelEntry, ModelRegistry, RegistryError, readCard
from .resources import resourcePath
from .results import ComparisonLayout, addSegmentation, addVolume, buildSegmentation, removeFromScene
from .runner import EngineCancelled, EngineError, ProcessRunner, engineEnvironment, pythonExecutable
from .volumeio import (
    InputError,
    assertSameGeometry,
    guessModality,
    readVolume,
    validateInputVolume,
    writeVolume,
)

DEVICES = ("auto", "cuda", "cpu")

ProgressCallback = Callable[[ProgressEvent], None]
LogCallback = Callable[[str], None]


def defaultCacheDir() -> Path:
    """``$MAMBAMIM_SEGMENTER_CACHE`` or the user cache folder (the module settings can override it)."""
    if os.environ.get("MAMBAMIM_SEGMENTER_CACHE"):
        return Path(os.environ["MAMBAMIM_SEGMENTER_CACHE"])
    base = os.environ.get("LOCALAPPDATA") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "MambaMIMSegmenter" / "models"


class OverlapChoice:
    """The sliding-window overlap to send: the model card's (None, the engine reads it from the card)
    until the user moves the slider after selecting the model."""

    def __init__(self) -> None:
        self.argument: float | None = None

    def modelSelected(self, cardOverlap: float | None) -> None:
        self.argument = None

    def userChanged(self, value: float) -> None:
        self.argument = float(value)


class EngineJob:
    """One engine run. ``poll()`` (non-blocking) returns True once finished; ``wait()`` blocks and
    returns the result or raises; ``cancel()`` kills it. The scene changes only in the finishing step."""

    def __init__(
        self,
        runner: ProcessRunner,
        workDir: Path,
        finish: Callable[[ProgressEvent], Any],
        onProgress: ProgressCallback | None = None,
        onLog: LogCallback | None = None,
    ):
        self.runner = runner
        self.workDir = workDir
        self._finish = finish
        self.onProgress = onProgress
        self.onLog = onLog
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False
        self.inputVolume = None  # the volume this run works on (shown with its result)
        self.startTime = time.monotonic()
        self.endTime: float | None = None
        self._logShown = 0

    @property
    def elapsedSeconds(self) -> float:
        return (self.endTime or time.monotonic()) - self.startTime

    @property
    def lastEvent(self) -> ProgressEvent | None:
        return self.runner.lastEvent

    cancellable = True

    @property
    def fraction(self) -> float | None:
        return self.lastEvent.fraction if self.lastEvent is not None else None

    @property
    def statusText(self) -> str:
        event = self.lastEvent
        return event.describe() if event is not None else "Starting…"

    def poll(self) -> bool:
        if self.finished:
            return True
        for event in self.runner.poll():
            if self.onProgress is not None:
                self.onProgress(event)
        if self.onLog is not None:
            for line in self.runner.log[self._logShown :]:
                self.onLog(line)
        self._logShown = len(self.runner.log)
        if self.runner.returncode is not None:
            try:
                self.result = self._finish(self.runner.result())
            except BaseException as exc:  # kept for the caller (GUI message / wait() re-raises)
                self.error = exc
            finally:
                self._close()
        return self.finished

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self.poll():
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"the engine did not finish within {timeout} s; it was stopped")
                time.sleep(interval)
        except BaseException:  # timeout, Ctrl+C in a script: never leave the child running
            self.cancel()
            raise
        if self.error is not None:
            raise self.error
        return self.result

    def cancel(self) -> None:
        if self.finished:
            return
        self.runner.cancel()
        self.error = EngineCancelled("cancelled by the user")
        self._close()

    def _close(self) -> None:
        self.finished = True
        self.endTime = time.monotonic()
        shutil.rmtree(self.workDir, ignore_errors=True)


class SegmenterLogic:
    """Segmentation and masked-input reconstruction through the engine child process."""

    def __init__(
        self,
        scene=None,
        registry: ModelRegistry | None = None,
        python: str | None = None,
        enginePaths: list[str] | None = None,
        tempRoot: Path | None = None,
    ):
        if scene is None:
            import slicer

            scene = slicer.mrmlScene
        self.scene = scene
        self.registry = registry or ModelRegistry(resourcePath("models.json"), defaultCacheDir())
        self.python = python or pythonExecutable()
        self.enginePaths = defaultEnginePaths() if enginePaths is None else enginePaths
        self.tempRoot = tempRoot
        self.comparisonLayout = ComparisonLayout()

    def setCacheDir(self, cacheDir: Path) -> bool:
        """Use another model cache folder; False when it is the current one. Hashes already verified
        stay verified, so changing the folder never re-hashes the built-in models."""
        cacheDir = Path(cacheDir)
        if cacheDir == self.registry.cacheDir:
            return False
        self.registry.cacheDir = cacheDir
        return True

    def modelOverlap(self, entry: ModelEntry) -> float | None:
        """The sliding-window overlap in the model's card, when the model is available locally."""
        try:
            path = self.registry.localPath(entry)
            overlap = readCard(path)["input"].get("overlap") if path is not None else None
        except (RegistryError, OSError):
            return None
        return float(overlap) if overlap is not None else None

    # -- models --------------------------------------------------------------------------------------
    def resolveModel(
        self, model: str | Path | ModelEntry, task: str = "segmentation"
    ) -> tuple[ModelEntry | None, Path]:
        """(entry, local path) for a registry id, an entry, or a package folder / checkpoint path.
        Registry models must already be available locally (use ``registry.fetch`` to download)."""
        if isinstance(model, ModelEntry):
            entry = model
        elif isinstance(model, Path) or (isinstance(model, str) and Path(model).exists()):
            path = Path(model)
            if not path.exists():
                raise InputError(f"model path {path} does not exist")
            if task == "reconstruction":
                return None, path
            return ModelRegistry.entryFromPackage(path, path.name), path
        else:
            entry = self.registry.get(str(model))
        if entry.task != task:
            raise InputError(f"model {entry.id!r} is a {entry.task} model; select a {task} model")
        path = self.registry.localPath(entry)
        if path is None:
            raise RegistryError(
                f"model {entry.id!r} is not downloaded yet; download it first (Download button)"
            )
        return entry, path

    # -- segmentation ---------------------------------------------------------------------------------
    def startSegmentation(
        self,
        volumeNode,
        model: str | Path | ModelEntry,
        device: str = "auto",
        fast: bool = False,
        overlap: float | None = None,
        outputSegmentationNode=None,
        checkModality: bool = True,
        onProgress: ProgressCallback | None = None,
        onLog: LogCallback | None = None,
    ) -> EngineJob:
        """Validate, write the input and start the engine; returns at once with the running job."""
        validateInputVolume(volumeNode)
        _checkDevice(device)
        if overlap is not None and not 0.0 <= overlap < 1.0:
            raise InputError(f"overlap must be in [0, 1), got {overlap}")
        entry, packageDir = self.resolveModel(model, "segmentation")
        card = readCard(packageDir)
        modality = self.checkModality(volumeNode, entry, card, packageDir) if checkModality else None
        workDir = self._workDir()
        try:
            inputPath = writeVolume(volumeNode, workDir / "input.nrrd")
            outputPath = workDir / "labels.nrrd"
            command = [
                self.python,
                "-m",
                "mambamim",
                "segment",
                "--model",
                packageDir,
                "--input",
                inputPath,
                "--output",
                outputPath,
                "--device",
                device,
                "--progress",
                "json",
                "--overwrite",
            ]
            if modality in ("CT", "MR"):  # the engine applies the same rule again to what it loads
                command += ["--modality", modality]
            if not checkModality:  # the user turned the check off: the engine must not refuse either
                command.append("--allow-other-modality")
            if fast:
                command.append("--fast")
            if overlap is not None:
                command += ["--overlap", f"{overlap:g}"]
            runner = self._start(command)
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise

        def finish(done: ProgressEvent):
            labelPath = Path(done.outputs.get("labels", outputPath))
            labelmap = readVolume(labelPath, labelmap=True)
            segmentation = buildSegmentation(labelmap, card["labels"], volumeNode)
            return addSegmentation(segmentation, volumeNode, self.scene, outputSegmentationNode)

        job = EngineJob(runner, workDir, finish, onProgress, onLog)
        job.inputVolume = volumeNode
        return job

    def checkModality(self, volumeNode, entry: ModelEntry, card: dict, packageDir: Path) -> str:
        """The input's modality by the engine's rule, refused by the engine's check when the model is
        for another one; the message names the volume and the model."""
        modality = importEngineModule("infer.modality")
        actual = guessModality(volumeNode)
        try:
            modality.check_modality(card["input"]["modality"], actual, packageDir)
        except modality.ModalityMismatch as exc:
            raise InputError(
                f'Model "{entry.title}" is for {exc.expected} images, but "{volumeNode.GetName()}" looks '
                f"like {exc.actual}. Select a {exc.expected} volume or a model trained on {exc.actual}."
            ) from None
        return actual

    def segment(self, volumeNode, model, device: str = "auto", waitForCompletion: bool = True, **kwargs):
        """Segment ``volumeNode``; the segmentation node, or the running :class:`EngineJob` when
        ``waitForCompletion`` is False. Keyword arguments as :meth:`startSegmentation`."""
        job = self.startSegmentation(volumeNode, model, device, **kwargs)
        return job.wait() if waitForCompletion else job

    # -- masked-input reconstruction -----------------------------------------------------------------
    def startReconstruction(
        self,
        volumeNode,
        checkpoint: str | Path | ModelEntry,
        maskRatio: float = 0.75,
        seed: int = 0,
        device: str = "auto",
        showResult: bool = True,
        onProgress: ProgressCallback | None = None,
        onLog: LogCallback | None = None,
    ) -> EngineJob:
        validateInputVolume(volumeNode)
        _checkDevice(device)
        if not 0.25 <= maskRatio <= 0.9:
            raise InputError(f"mask ratio must be between 0.25 and 0.9, got {maskRatio}")
        _, checkpointPath = self.resolveModel(checkpoint, "reconstruction")
        if not Path(checkpointPath).is_file():
            raise InputError(f"checkpoint {checkpointPath} is not a file")
        workDir = self._workDir()
        try:
            inputPath = writeVolume(volumeNode, workDir / "input.nrrd")
            outputDir = workDir / "reconstruction"
            command = [
                self.python,
                "-m",
                "mambamim",
                "reconstruct",
                "--checkpoint",
                checkpointPath,
                "--input",
                inputPath,
                "--output-dir",
                outputDir,
                "--mask-ratio",
                f"{maskRatio:g}",
                "--seed",
                str(int(seed)),
                "--device",
                device,
                "--progress",
                "json",
                "--format",
                "nrrd",
                "--overwrite",
            ]
            runner = self._start(command)
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise

        def finish(done: ProgressEvent):
            maskedPath, reconPath = _reconstructionOutputs(done.outputs)
            name = volumeNode.GetName()
            masked = readVolume(maskedPath, labelmap=False)
            reconstruction = readVolume(reconPath, labelmap=False)
            # Both are checked before either is added, so a bad output adds nothing.
            for node, what in ((masked, "masked input"), (reconstruction, "reconstruction")):
                assertSameGeometry(volumeNode, node, what)
            added = []
            try:
                for node, suffix in ((masked, "masked input"), (reconstruction, "reconstruction")):
                    added.append(addVolume(node, volumeNode, self.scene, f"{name} {suffix}", suffix))
                if showResult:
                    self.comparisonLayout.show(self.scene, (volumeNode, masked, reconstruction))
            except BaseException:
                # Nothing half-created: a failure while showing removes what was added.
                for node in added:
                    removeFromScene(node, self.scene)
                raise
            return masked, reconstruction

        job = EngineJob(runner, workDir, finish, onProgress, onLog)
        job.inputVolume = volumeNode
        return job

    def reconstruct(
        self,
        volumeNode,
        checkpoint,
        maskRatio: float = 0.75,
        seed: int = 0,
        device: str = "auto",
        waitForCompletion: bool = True,
        **kwargs,
    ):
        """(masked input, reconstruction) volume nodes, or the running job when not waiting."""
        job = self.startReconstruction(volumeNode, checkpoint, maskRatio, seed, device, **kwargs)
        return job.wait() if waitForCompletion else job

    # -- helpers ---------------------------------------------------------------------------------------
    def scratchDir(self) -> Path:
        """Where small temporary files go (Slicer's temporary folder inside the application)."""
        return Path(self.tempRoot) if self.tempRoot is not None else Path(tempfile.gettempdir())

    def _workDir(self) -> Path:
        root = self.tempRoot
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="MambaMIMSegmenter-", dir=root))

    def _start(self, command: list) -> ProcessRunner:
        runner = ProcessRunner(command, env=engineEnvironment(self.enginePaths))
        runner.start()
        return runner


def _checkDevice(device: str) -> None:
    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")


def _reconstructionOutputs(outputs: dict[str, str]) -> tuple[Path, Path]:
    """The masked-input and reconstruction volumes among ``mambamim reconstruct``'s outputs."""
    missing = [key for key in ("masked", "reconstruction") if key not in outputs]
    if missing:
        raise EngineError(
            f"the engine did not report its {' and '.join(missing)} output(s); it reported {outputs}"
        )
    return Path(outputs["masked"]), Path(outputs["reconstruction"])
