"""Model registry: schema validation, SHA-256 verification, resumable downloads, cache, import."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
import typing
import zipfile
from pathlib import Path

import pytest
from MambaMIMSegmenterLib.download import ChecksumError, Download, DownloadCancelled
from MambaMIMSegmenterLib.registry import ModelRegistry, RegistryError

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "Resources" / "models.json"
SCHEMA = ROOT / "Resources" / "models.schema.json"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry(**overrides) -> dict:
    entry = {
        "id": "demo",
        "version": "1.0",
        "title": "Demo",
        "task": "segmentation",
        "modality": "CT",
        "labels": [{"value": 1, "name": "spleen", "color": [157, 108, 162]}],
        "url": "models/demo",
        "sha256": "0" * 64,
        "license": "Apache-2.0",
        "expected_seconds": {"cpu": 30, "gpu": 3},
    }
    entry.update(overrides)
    return entry


def _write_registry(folder: Path, *entries: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCHEMA, folder / "models.schema.json")
    path = folder / "models.json"
    path.write_text(json.dumps({"format_version": 1, "models": list(entries)}))
    return path


def _make_package(folder: Path, weights: bytes = b"weights-bytes" * 100) -> tuple[Path, str]:
    folder.mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(weights)
    card = {  # a complete card (Resources/model_card.schema.json), as the engine writes them
        "format_version": 1,
        "name": "Tiny demo",
        "version": "2.0",
        "architecture": {"name": "hymamba", "config": {"out_channels": 2}},
        "input": {
            "channels": 1, "modality": "CT", "spacing": [1.5, 1.5, 1.5], "roi_size": [96, 96, 96],
            "intensity": {"type": "window", "lower": -175.0, "upper": 250.0}, "overlap": 0.5,
        },
        "labels": [{"value": 1, "name": "liver", "color": [221, 130, 101]}],
        "license": "CC-BY-4.0",
        "weights": {"file": "weights.safetensors", "sha256": _sha(weights)},
    }
    (folder / "model.json").write_text(json.dumps(card))
    return folder, _sha(weights)


def test_shipped_registry_is_valid_and_its_local_models_verify(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    data = json.loads(REGISTRY.read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    registry = ModelRegistry(REGISTRY, tmp_path / "cache")
    entries = registry.entries()
    assert "btcv-hymamba-demo" in [e.id for e in entries]
    for entry in entries:
        if entry.localSource is not None and entry.localSource.exists():
            path = registry.localPath(entry)  # raises on a SHA-256 mismatch
            if entry.task == "segmentation":
                card = json.loads((path / "model.json").read_text())
                assert card["weights"]["sha256"] == entry.sha256
                assert [(lab["value"], lab["name"]) for lab in card["labels"]] == [
                    (lab["value"], lab["name"]) for lab in entry.labels
                ]
                assert card["input"]["modality"] == entry.modality


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"sha256": "abc"}, "models/0/sha256"),
        ({"task": "classification"}, "models/0/task"),
        ({"expected_seconds": {"gpu": 3}}, "models/0/expected_seconds"),
        ({"labels": [{"value": 0, "name": "bg", "color": [0, 0, 0]}]}, "models/0/labels/0/value"),
        ({"url": ""}, "models/0/url"),
    ],
)
def test_invalid_registry_is_refused_naming_the_field(tmp_path, change, where):
    pytest.importorskip("jsonschema")
    registry = ModelRegistry(_write_registry(tmp_path, _entry(**change)), tmp_path / "cache")
    with pytest.raises(RegistryError, match=where):
        registry.entries()


def test_missing_field_and_duplicate_ids_are_refused(tmp_path):
    broken = _entry()
    del broken["license"]
    with pytest.raises(RegistryError, match="license"):
        ModelRegistry(_write_registry(tmp_path / "a", broken), tmp_path / "cache").entries()
    with pytest.raises(RegistryError, match="duplicate model ids demo"):
        ModelRegistry(_write_registry(tmp_path / "b", _entry(), _entry()), tmp_path / "cache").entries()


def test_local_package_with_wrong_sha256_is_refused(tmp_path):
    package, sha = _make_package(tmp_path / "reg" / "models" / "demo")
    registry = ModelRegistry(_write_registry(tmp_path / "reg", _entry(sha256=sha)), tmp_path / "cache")
    assert registry.localPath(registry.get("demo")) == package
    (package / "weights.safetensors").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        registry.localPath(registry.get("demo"))


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one blob with HTTP Range support and records what was asked for."""

    blob = b""
    requests: typing.ClassVar[list] = []

    def do_GET(self):
        start = 0
        header = self.headers.get("Range")
        type(self).requests.append(header)
        if header:
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.blob) - 1}/{len(self.blob)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(self.blob) - start))
        self.end_headers()
        self.wfile.write(self.blob[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def http_blob():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    _RangeHandler.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(blob: bytes) -> str:
        _RangeHandler.blob = blob
        return f"http://127.0.0.1:{server.server_address[1]}/model.zip"

    yield serve
    server.shutdown()


def _zip_package(tmp_path: Path) -> tuple[bytes, str]:
    package, _ = _make_package(tmp_path / "src" / "tiny")
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in package.iterdir():
            zf.write(file, f"tiny/{file.name}")
    data = archive.read_bytes()
    return data, _sha(data)


def test_download_resumes_verifies_and_extracts(tmp_path, http_blob):
    data, sha = _zip_package(tmp_path)
    url = http_blob(data)
    registry = ModelRegistry(
        _write_registry(tmp_path / "reg", _entry(url=url, sha256=sha)), tmp_path / "cache"
    )
    entry = registry.get("demo")
    assert registry.localPath(entry) is None  # not downloaded yet
    # An earlier attempt stopped half-way: the next one asks only for the rest.
    part = registry.downloadPath(entry).with_name(registry.downloadPath(entry).name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: len(data) // 2])
    download = registry.startDownload(entry)
    download.wait(timeout=30)
    assert _RangeHandler.requests == [f"bytes={len(data) // 2}-"]
    assert download.bytesDone == download.bytesTotal == len(data)
    path = registry.localPath(entry)
    assert (path / "model.json").is_file() and path.parent == tmp_path / "cache"
    assert not part.exists()


def test_download_with_wrong_sha256_leaves_nothing_usable(tmp_path, http_blob):
    data, _ = _zip_package(tmp_path)
    registry = ModelRegistry(
        _write_registry(tmp_path / "reg", _entry(url=http_blob(data), sha256="f" * 64)), tmp_path / "cache"
    )
    entry = registry.get("demo")
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        registry.startDownload(entry).wait(timeout=30)
    target = registry.downloadPath(entry)
    assert not target.exists() and not target.with_name(target.name + ".part").exists()
    assert registry.localPath(entry) is None


def test_cancelled_download_keeps_the_partial_file(tmp_path, http_blob):
    data = bytes(range(256)) * 40000  # 10 MB, several read chunks
    url = http_blob(data)
    download = Download(url, tmp_path / "big.bin", _sha(data))
    download.cancel()  # cancelled before the first chunk is written
    with pytest.raises(DownloadCancelled):
        download.wait(timeout=30)
    assert not (tmp_path / "big.bin").exists()
    assert Download(url, tmp_path / "big.bin", _sha(data)).wait(timeout=60).read_bytes() == data


def test_import_model_for_offline_sites(tmp_path):
    registry = ModelRegistry(_write_registry(tmp_path / "reg", _entry()), tmp_path / "cache")
    package, _ = _make_package(tmp_path / "usb" / "tiny")
    entry = registry.importModel(package)
    assert entry.imported and entry.title == "Tiny demo" and entry.modality == "CT"
    assert entry.id in [e.id for e in registry.entries("segmentation")]
    assert (registry.localPath(registry.get(entry.id)) / "model.json").is_file()
    broken, _ = _make_package(tmp_path / "usb" / "broken")
    (broken / "weights.safetensors").write_bytes(b"corrupt")
    with pytest.raises(RegistryError, match="SHA-256 mismatch"):
        registry.importModel(broken)
    with pytest.raises(RegistryError, match=r"no model\.json"):
        registry.importModel(tmp_path / "usb")
    assert [e.id for e in registry.importedEntries()] == [entry.id]


def test_a_card_missing_what_the_engine_needs_is_refused_by_the_schema(tmp_path):
    from MambaMIMSegmenterLib.registry import RegistryError, readCard

    folder, _ = _make_package(tmp_path / "pkg")
    card = json.loads((folder / "model.json").read_text())
    del card["input"]["spacing"]
    card["labels"][0]["color"] = [0, 0, 300]
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(RegistryError, match=r"input: 'spacing' is a required property.*labels/0/color/2"):
        readCard(folder)
