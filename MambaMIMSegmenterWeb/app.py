"""The web app: trame state and actions over one :class:`CaseScene` and the library's logic.

State names are the contract with :mod:`MambaMIMSegmenterWeb.ui` (and the browser tests).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MambaMIMSegmenterLib import InputError, ModelRegistry, RegistryError, SegmenterLogic
from MambaMIMSegmenterLib.logic import defaultCacheDir
from MambaMIMSegmenterLib.registry import readCard
from MambaMIMSegmenterLib.resources import resourcePath
from trame.app import TrameApp
from trame_server.utils.asynchronous import create_task
from trame_slicer.core import LayoutManager, SlicerApp

from . import dicomseg, jobs
from .scene import RECONSTRUCTION_LAYOUT, SEGMENT_LAYOUT, WINDOW_LEVEL_PRESETS, CaseScene, LoadError, layouts
from .scene import scan_suffix as _scan_suffix
from .views import register_view_factories

LOG_LINES = 200


@dataclass
class AppOptions:
    """Server-side settings (from ``mambamim web``'s arguments)."""

    data_dir: Path | None = None
    load: Path | None = None
    sample: Path | None = None
    image_format: str = "turbo-jpeg"
    cache_dir: Path | None = None


class SegmenterWebApp(TrameApp):
    def __init__(self, options: AppOptions, server=None):
        super().__init__(server)
        self.options = options
        self.slicer_app = SlicerApp()
        register_view_factories(self.slicer_app.view_manager, self.server, options.image_format)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict(layouts())
        self.case = CaseScene(self.slicer_app, self.layout_manager)
        registry = ModelRegistry(resourcePath("models.json"), options.cache_dir or defaultCacheDir())
        self.logic = SegmenterLogic(scene=self.slicer_app.scene, registry=registry)
        self.job = None
        self.uploads = Path(tempfile.mkdtemp(prefix="mambamim-web-uploads-"))
        self._init_state()
        from .ui import build_ui

        self.ui = build_ui(self)
        self.layout_manager.set_layout(SEGMENT_LAYOUT)
        self.case.match_slicer_rendering()
        if options.load is not None:
            self.load_scan(options.load)

    # -- state ------------------------------------------------------------------------------------
    def _init_state(self) -> None:
        state = self.state
        segmentation_models = self.logic.registry.entries("segmentation")
        reconstruction_models = self.logic.registry.entries("reconstruction")
        state.trame__title = "MambaMIM Segmenter"
        state.update(
            {
                "volume_name": "",
                "message": "",
                "message_is_error": False,
                "server_scans": self.server_scans(),
                "server_scan": None,
                "has_sample": self.sample_path() is not None,
                "wl_presets": list(WINDOW_LEVEL_PRESETS),
                "wl_preset": "CT abdomen",
                "models": [{"title": e.title, "value": e.id} for e in segmentation_models],
                "model_id": segmentation_models[0].id if segmentation_models else None,
                "devices": ["auto", "cpu", "cuda"],
                "device": "auto",
                "fast": False,
                "overlap": 0.5,
                "checkpoints": [{"title": e.title, "value": e.id} for e in reconstruction_models],
                "checkpoint_id": reconstruction_models[0].id if reconstruction_models else None,
                "mask_ratio": 0.75,
                "seed": 0,
                "running": "",  # "", "segment" or "reconstruct"
                "progress": 0.0,
                "progress_text": "",
                "log": "",
                "segments": [],
                "segment_opacity": 1.0,
                "show_surfaces": False,
                "dicom_seg_reason": "",
                "has_reconstruction": False,
                "view_layout": SEGMENT_LAYOUT,
            }
        )
        state.change("model_id")(self._on_model)
        state.change("wl_preset")(lambda wl_preset, **_: self.case.set_window_level(wl_preset))
        state.change("segment_opacity")(
            lambda segment_opacity, **_: self.case.set_segmentation_opacity(segment_opacity)
        )
        state.change("view_layout")(self._on_view_layout)
        self._on_model(state.model_id)

    def _on_model(self, model_id=None, **_):
        """The overlap slider starts at the card's overlap (one source of truth)."""
        try:
            entry = self.logic.registry.get(model_id)
            path = self.logic.registry.localPath(entry)
            if path is not None:
                self.state.overlap = float(readCard(path)["input"].get("overlap", 0.5))
        except (RegistryError, KeyError, OSError):
            pass

    def toggle_surfaces(self) -> None:
        """3-D surfaces on demand (building them takes a few seconds for many segments)."""
        self.state.show_surfaces = not self.state.show_surfaces
        self.case.show_surfaces(self.state.show_surfaces)

    def _on_view_layout(self, view_layout=SEGMENT_LAYOUT, **_):
        if view_layout == RECONSTRUCTION_LAYOUT and self.case.reconstruction is not None:
            self.case.show_reconstruction_layout()
        else:
            self.case.show_segment_layout()

    def say(self, text: str, error: bool = False) -> None:
        self.state.message = text
        self.state.message_is_error = error

    def append_log(self, line: str) -> None:
        lines = [*self.state.log.splitlines(), line][-LOG_LINES:]
        self.state.log = "\n".join(lines)

    # -- scans ------------------------------------------------------------------------------------
    def server_scans(self) -> list[str]:
        folder = self.options.data_dir
        if folder is None or not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if path.is_file() and _scan_suffix(path.name) and "/." not in f"/{relative}":
                found.append(relative)
            elif path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
                found.append(relative + "/")
        return found

    def sample_path(self) -> Path | None:
        sample = self.options.sample
        return sample if sample is not None and sample.exists() else None

    def load_scan(self, path: Path, name: str = "") -> bool:
        if self.state.running:
            self.say("Wait for the running job to finish (or cancel it) before loading a scan.", True)
            return False
        try:
            node = self.case.load(path, name)
        except (LoadError, InputError, OSError) as exc:
            self.say(str(exc), error=True)
            return False
        modality = self.case.modality()
        self.state.update(
            {
                "volume_name": node.GetName(),
                "wl_preset": "CT abdomen" if modality == "CT" else "MR auto",
                "segments": [],
                "show_surfaces": False,
                "has_reconstruction": False,
                "view_layout": SEGMENT_LAYOUT,
                "progress": 0.0,
                "progress_text": "",
            }
        )
        self.say(f"Loaded {node.GetName()} ({modality}).")
        return True

    def load_server_scan(self) -> None:
        choice = self.state.server_scan
        folder = self.options.data_dir
        if not choice or folder is None:
            return
        path = (folder / choice).resolve()
        if not path.is_relative_to(folder.resolve()):  # never outside --data-dir
            self.say(f"{choice}: not inside the data folder", error=True)
            return
        self.load_scan(path)

    def load_sample(self) -> None:
        sample = self.sample_path()
        if sample is not None:
            self.load_scan(sample, "sample CT")

    def receive_upload(self, name: str, path: Path) -> bool:
        """A file the browser uploaded (see server.py's upload route) becomes the case."""
        return self.load_scan(path, Path(name).name.split(".")[0] or "upload")

    # -- engine -----------------------------------------------------------------------------------
    def start_segment(self) -> None:
        if self.state.running or self.case.volume is None:
            return
        self.state.log = ""
        try:
            job = self.logic.startSegmentation(
                self.case.volume,
                self.state.model_id,
                self.state.device,
                fast=bool(self.state.fast),
                overlap=float(self.state.overlap),
                onLog=self.append_log,
            )
        except (InputError, RegistryError, ValueError, OSError) as exc:
            self.say(str(exc), error=True)
            return
        labels = self._card_labels(self.state.model_id)
        self._run(job, "segment", lambda node: self._segmentation_done(node, labels))

    def start_reconstruct(self) -> None:
        if self.state.running or self.case.volume is None:
            return
        self.state.log = ""
        try:
            job = self.logic.startReconstruction(
                self.case.volume,
                self.state.checkpoint_id,
                maskRatio=float(self.state.mask_ratio),
                seed=int(self.state.seed),
                device=self.state.device,
                showResult=False,
                onLog=self.append_log,
            )
        except (InputError, RegistryError, ValueError, OSError) as exc:
            self.say(str(exc), error=True)
            return
        self._run(job, "reconstruct", self._reconstruction_done)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _run(self, job, kind: str, done) -> None:
        self.job = job
        self.state.update({"running": kind, "progress": 0.0, "progress_text": "starting"})
        self.say("Segmenting…" if kind == "segment" else "Reconstructing the masked input…")

        def on_progress(progress: jobs.Progress) -> None:
            with self.state:
                self.state.progress = progress.percent
                self.state.progress_text = progress.text

        def on_done(result: Any, error: BaseException | None) -> None:
            with self.state:
                self.job = None
                self.state.running = ""
                if error is not None:
                    self.state.progress = 0.0
                    self.state.progress_text = ""
                    self.say(str(error).splitlines()[0] if str(error) else type(error).__name__, True)
                    for line in str(error).splitlines()[1:]:
                        self.append_log(line)
                    return
                self.state.progress = 100.0
                try:
                    done(result)
                except Exception as exc:  # showing the result failed: say so, keep serving
                    self.say(f"could not show the result: {exc}", True)
                    raise

        create_task(jobs.follow(job, on_progress, on_done, self.case.batch))

    def _card_labels(self, model_id: str) -> list[dict]:
        """The card's labels (the segments' order, names, colours and codes); the model is in the
        cache once a run has started."""
        return readCard(self.logic.registry.localPath(self.logic.registry.get(model_id)))["labels"]

    def _segmentation_done(self, node, labels: list[dict]) -> None:
        with self.case.batch():
            self.case.set_segmentation(node, labels)
            self.case.set_segmentation_opacity(self.state.segment_opacity)
        self.state.update(
            {
                "segments": self.case.segment_rows(),
                "show_surfaces": False,
                "dicom_seg_reason": dicomseg.unavailable_reason(self.case.dicom_dir is not None),
            }
        )
        self.state.view_layout = SEGMENT_LAYOUT
        found = sum(1 for row in self.state.segments if row["volume_ml"] > 0)
        self.say(f"Segmentation done: {found} of {len(self.state.segments)} segments found.")

    def _reconstruction_done(self, result) -> None:
        masked, reconstruction = result
        with self.case.batch():
            self.case.set_reconstruction(masked, reconstruction)
            self.case.set_window_level(self.state.wl_preset)
        self.state.has_reconstruction = True
        self.state.view_layout = RECONSTRUCTION_LAYOUT
        self._on_view_layout(RECONSTRUCTION_LAYOUT)
        self.say("Reconstruction done: input, masked input and reconstruction, linked.")

    # -- segment list -----------------------------------------------------------------------------
    def set_segment_visible(self, segment_id: str, visible: bool) -> None:
        self.case.set_segment_visible(segment_id, visible)
        self.state.segments = self.case.segment_rows()

    # -- session ----------------------------------------------------------------------------------
    def end_session(self) -> None:
        """The browser left: stop its job, drop its scan and results, forget its uploads."""
        self.cancel()
        with self.state:
            self.case.clear()
            self.state.update(
                {
                    "volume_name": "",
                    "segments": [],
                    "has_reconstruction": False,
                    "show_surfaces": False,
                    "view_layout": SEGMENT_LAYOUT,
                    "log": "",
                    "progress": 0.0,
                    "progress_text": "",
                    "message": "",
                }
            )
        shutil.rmtree(self.uploads, ignore_errors=True)
        self.uploads.mkdir(parents=True, exist_ok=True)
        if self.options.load is not None:
            self.load_scan(self.options.load)
