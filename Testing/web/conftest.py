"""Browser tests of ``mambamim web``: the real app (trame-slicer, offscreen EGL views, the engine in
its child process) on a free 127.0.0.1 port, driven by Debian's Chromium through Playwright's Python
API. Views are checked from their pixels, and every wait polls a condition (no fixed sleeps).

They run in the web environment (``make test-web``); elsewhere they are skipped, unless
``MAMBAMIM_REQUIRE_WEB_TESTS=1`` (set by ``make test-web``) turns a missing piece into a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path(os.environ.get("MAMBAMIM_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
DEMO_CARD = ROOT / "Resources" / "models" / "btcv-hymamba-demo" / "model.json"
REQUIRED = os.environ.get("MAMBAMIM_REQUIRE_WEB_TESTS") == "1"


def _need(condition: bool, why: str) -> None:
    if condition:
        return
    if REQUIRED:
        pytest.fail(why)
    pytest.skip(why)


try:
    import trame_slicer  # noqa: F401
    from playwright.sync_api import Page, sync_playwright
except ImportError as exc:  # the test environment has no [web] extra: these tests are not collected
    if REQUIRED:
        raise RuntimeError(f"the web extra is not installed ({exc}); run make web-venv") from exc
    collect_ignore_glob = ["test_*.py"]
    Page = object


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.25):
    """Poll ``condition`` until it returns something truthy; its value, or a failure naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServer:
    """``mambamim web`` in its own process group (so teardown also ends the engine's children)."""

    def __init__(self, sample: Path, token: str | None = None, log_dir: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.token = token
        command = [sys.executable, "-m", "mambamim", "web", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--load", str(sample), "--sample", str(sample), "--image-format", "png"]
        env = dict(os.environ)
        if token:
            env["MAMBAMIM_WEB_TOKEN"] = token
        self.log_path = (log_dir or Path("/tmp")) / f"mambamim-web-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def status(self, path: str = "index.html") -> int | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def wait_ready(self, timeout: float = 120.0) -> None:
        def ready():
            if self.process.poll() is not None:
                pytest.fail(f"mambamim web exited ({self.process.returncode}):\n{self.log_tail()}")
            return self.status() in (200, 401)

        wait_for(ready, timeout, "the web app to answer")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self._log.close()


@pytest.fixture(scope="session")
def sample_scan() -> Path:
    sample = ROOT.parent / "shared" / "data" / "ct_abdomen" / "ct.nii.gz"
    _need(sample.is_file(), f"the sample CT is missing ({sample})")
    return sample


@pytest.fixture(scope="session")
def demo_labels() -> list[dict]:
    return json.loads(DEMO_CARD.read_text())["labels"]


@pytest.fixture(scope="session")
def browser():
    _need(CHROMIUM.is_file(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


def start_server(sample: Path, tmp_path_factory, token: str | None = None) -> Iterator[WebServer]:
    server = WebServer(sample, token, tmp_path_factory.mktemp("web"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def web_app(sample_scan, tmp_path_factory) -> Iterator[WebServer]:
    yield from start_server(sample_scan, tmp_path_factory)


@pytest.fixture
def page(browser, web_app) -> Iterator[Page]:
    """A fresh browser session on the app (its own scene); closing it ends the server session."""
    context = browser.new_context(viewport={"width": 1400, "height": 850})
    page = context.new_page()
    open_app(page, web_app.url)
    yield page
    context.close()
    # The next test's session may start only once this one has been released.
    wait_for(lambda: web_app.status() == 200, 30, "the session to end")


def open_app(page: Page, url: str) -> None:
    """Load the app (retrying while a previous session is still closing) and wait for the scan."""

    def loaded():
        response = page.goto(url)
        if response is not None and response.status == 503:
            return False
        page.locator("#volume-name").wait_for(timeout=60_000)
        return True

    wait_for(loaded, 60, "the app page", interval=1.0)
    wait_for(lambda: page.locator("#volume-name").inner_text().strip(), 60, "the scan to load")
    wait_for(lambda: len(visible_views(page)) >= 3, 60, "the views")


# -- pixels -------------------------------------------------------------------------------------------
def visible_views(page: Page) -> list:
    """The streamed view images on screen, largest first (the primary view)."""
    shown = [(img, img.bounding_box()) for img in page.locator("img").all() if img.is_visible()]
    shown = [(img, box) for img, box in shown if box and box["width"] > 100 and box["height"] > 100]
    return [img for img, box in sorted(shown, key=lambda pair: -(pair[1]["width"] * pair[1]["height"]))]


def segment_views(page: Page) -> dict:
    """The Segment layout's views by place: the large axial view, then the column beside it
    (3-D on top, coronal, sagittal)."""
    views = visible_views(page)
    axial, column = views[0], sorted(views[1:4], key=lambda view: view.bounding_box()["y"])
    return {"axial": axial, "threed": column[0], "coronal": column[1], "sagittal": column[2]}


# The frame the server streamed into the view's <img>, read back losslessly through a canvas (a page
# screenshot would also catch the HTML drawn over the view: sliders, buttons).
_FRAME_JS = """img => { const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  canvas.getContext('2d').drawImage(img, 0, 0); return canvas.toDataURL('image/png'); }"""


def view_pixels(view) -> np.ndarray:
    """The view's current frame as an (H, W, 3) int16 array."""
    from PIL import Image

    data = view.evaluate(_FRAME_JS)
    png = base64.b64decode(data.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def chromatic(pixels: np.ndarray, threshold: int = 30) -> np.ndarray:
    """Pixels that are clearly coloured (a grey CT has max - min channel ~ 0)."""
    return (pixels.max(axis=-1) - pixels.min(axis=-1)) > threshold


def chroma_signature(rgb: np.ndarray) -> np.ndarray:
    """A colour's hue-like signature that survives blending with grey: (c - min) / (max - min).
    An overlay pixel is a·colour + (1-a)·grey; subtracting the smallest channel removes the grey."""
    rgb = np.asarray(rgb, dtype=np.float64)
    low = rgb.min(axis=-1, keepdims=True)
    span = np.maximum(rgb.max(axis=-1, keepdims=True) - low, 1e-6)
    return (rgb - low) / span


def match_card_colours(pixels: np.ndarray, colours: np.ndarray, tolerance: float = 0.2) -> np.ndarray:
    """For each chromatic pixel, the index of the card colour with the same signature, or -1."""
    signatures = chroma_signature(pixels[chromatic(pixels)])
    targets = chroma_signature(colours)
    distance = np.abs(signatures[:, None, :] - targets[None, :, :]).max(axis=-1)
    best = distance.argmin(axis=1)
    return np.where(distance[np.arange(len(best)), best] <= tolerance, best, -1)
