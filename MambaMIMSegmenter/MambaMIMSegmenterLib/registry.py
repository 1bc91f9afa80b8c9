"""The model registry (``Resources/models.json``), the model cache, and "Import model…".

An entry's ``url`` is an ``https://`` / ``file://`` URL or a path relative to the registry file
(the demo package ships inside the extension). Segmentation entries are model packages (a folder with
``model.json`` + weights, or a ``.zip`` of one); reconstruction entries are MambaMIM checkpoints.
Everything is verified by SHA-256 before use: a file's own hash, or for a package folder the hash of
its weights file. Packages imported from disk (offline sites) live in the cache folder and are listed
next to the registry's entries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cardschema import cardProblems
from .download import Download, DownloadError, sha256File, verifySha256

CARD_FILE = "model.json"


class RegistryError(ValueError):
    """The registry file or a model package is invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class ModelEntry:
    id: str
    version: str
    title: str
    task: str
    modality: str
    labels: list[dict[str, Any]]
    url: str
    sha256: str
    license: str
    expectedSeconds: dict[str, float] = field(default_factory=dict)
    description: str = ""
    baseDir: Path = Path()
    imported: bool = False

    @classmethod
    def fromDict(cls, record: dict[str, Any], baseDir: Path) -> ModelEntry:
        return cls(
            id=record["id"],
            version=record["version"],
            title=record["title"],
            task=record["task"],
            modality=record["modality"],
            labels=list(record["labels"]),
            url=record["url"],
            sha256=record["sha256"].lower(),
            license=record["license"],
            expectedSeconds=dict(record.get("expected_seconds") or {}),
            description=record.get("description", ""),
            baseDir=baseDir,
        )

    @property
    def localSource(self) -> Path | None:
        """The file or folder for local URLs (relative paths and file://); None for remote ones."""
        parsed = urllib.parse.urlparse(self.url)
        if parsed.scheme == "file":
            return Path(urllib.request.url2pathname(parsed.path))
        if parsed.scheme in ("http", "https"):
            return None
        path = Path(self.url)
        return path if path.is_absolute() else self.baseDir / path

    @property
    def cacheName(self) -> str:
        return f"{self.id}-{self.version}"

    def describe(self) -> str:
        seconds = ", ".join(f"{k.upper()} ~{v:g} s" for k, v in self.expectedSeconds.items())
        return f"{self.title} ({self.modality}, {len(self.labels)} labels{', ' + seconds if seconds else ''})"


def readCard(packageDir: Path) -> dict[str, Any]:
    """The ``model.json`` card of a package folder, checked against the model card schema."""
    cardPath = Path(packageDir) / CARD_FILE
    if not cardPath.is_file():
        raise RegistryError(f"{packageDir} is not a model package: it has no {CARD_FILE}")
    try:
        card = json.loads(cardPath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read model card {cardPath}: {exc}") from exc
    problems = cardProblems(card)
    if problems:
        raise RegistryError(f"invalid model card {cardPath}: " + "; ".join(problems))
    return card


def validateRegistry(data: Any, schema: dict[str, Any], source: str) -> None:
    """Validate against the JSON schema (jsonschema when installed, else the schema's required keys)."""
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        try:
            jsonschema.validate(data, schema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
            raise RegistryError(f"{source}: invalid at {where}: {exc.message}") from None
        return
    # Without jsonschema (a fresh Slicer before the first dependency install): the required keys.
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise RegistryError(f"{source}: expected an object with a 'models' list")
    required = schema["$defs"]["model"]["required"]
    for index, model in enumerate(data["models"]):
        missing = [key for key in required if not isinstance(model, dict) or key not in model]
        if missing:
            raise RegistryError(f"{source}: invalid at models/{index}: missing {', '.join(missing)}")


class ModelRegistry:
    """Registry entries plus packages imported into ``cacheDir``; fetches and verifies models."""

    def __init__(self, registryFile: Path, cacheDir: Path, schemaFile: Path | None = None):
        self.registryFile = Path(registryFile)
        self.cacheDir = Path(cacheDir)
        self.schemaFile = (
            Path(schemaFile) if schemaFile else self.registryFile.with_name("models.schema.json")
        )
        self._verified: set[tuple[str, int, int]] = set()

    # -- listing ------------------------------------------------------------------------------------
    def builtinEntries(self) -> list[ModelEntry]:
        try:
            data = json.loads(self.registryFile.read_text(encoding="utf-8"))
            schema = json.loads(self.schemaFile.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read model registry {self.registryFile}: {exc}") from exc
        validateRegistry(data, schema, str(self.registryFile))
        entries = [ModelEntry.fromDict(m, self.registryFile.parent) for m in data["models"]]
        ids = [e.id for e in entries]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise RegistryError(f"{self.registryFile}: duplicate model ids {', '.join(duplicates)}")
        return entries

    def importedEntries(self) -> list[ModelEntry]:
        folder = self.cacheDir / "imported"
        entries = []
        for packageDir in sorted(folder.glob("*/")) if folder.is_dir() else []:
            try:
                entries.append(self.entryFromPackage(packageDir, packageDir.name))
            except (RegistryError, OSError):
                continue  # a broken import is reported when imported, not on every listing
        return entries

    def entries(self, task: str | None = None) -> list[ModelEntry]:
        entries = self.builtinEntries() + self.importedEntries()
        return [e for e in entries if task is None or e.task == task]

    def get(self, modelId: str) -> ModelEntry:
        for entry in self.entries():
            if entry.id == modelId:
                return entry
        known = ", ".join(e.id for e in self.entries()) or "(none)"
        raise RegistryError(f"unknown model {modelId!r}; available models: {known}")

    @staticmethod
    def entryFromPackage(packageDir: Path, modelId: str) -> ModelEntry:
        card = readCard(packageDir)
        return ModelEntry(
            id=modelId,
            version=str(card.get("version", "")),
            title=str(card.get("name", modelId)),
            task="segmentation",
            modality=card["input"]["modality"],
            labels=card["labels"],
            url=str(packageDir),
            sha256=str(
                card["weights"].get("sha256") or sha256File(packageDir / card["weights"]["file"])
            ).lower(),
            license=str(card.get("license", "unknown")),
            description=str(card.get("training_data", "")),
            baseDir=packageDir.parent,
            imported=True,
        )

    # -- availability -------------------------------------------------------------------------------
    def localPath(self, entry: ModelEntry) -> Path | None:
        """The verified package folder or checkpoint, if usable without downloading; else None."""
        source = entry.localSource
        if source is not None:
            if not source.exists():
                raise RegistryError(f"model {entry.id!r}: {source} does not exist")
            return self._prepareLocal(entry, source)
        downloaded = self.downloadPath(entry)
        return self._prepareLocal(entry, downloaded) if downloaded.exists() else None

    def downloadPath(self, entry: ModelEntry) -> Path:
        suffix = Path(urllib.parse.urlparse(entry.url).path).suffix or ".bin"
        return self.cacheDir / "downloads" / f"{entry.cacheName}{suffix}"

    def startDownload(self, entry: ModelEntry) -> Download:
        """Start fetching a remote entry in the background (resumes a previous partial download)."""
        if entry.localSource is not None:
            raise RegistryError(f"model {entry.id!r} is local ({entry.url}); nothing to download")
        return Download(entry.url, self.downloadPath(entry), entry.sha256).start()

    def fetch(self, entry: ModelEntry) -> Path:
        """Blocking convenience for scripts: local path, downloading first when needed."""
        path = self.localPath(entry)
        if path is None:
            self.startDownload(entry).wait()
            path = self.localPath(entry)
        return path

    def _prepareLocal(self, entry: ModelEntry, source: Path) -> Path:
        if source.is_dir():
            card = readCard(source)
            self._verifyOnce(source / card["weights"]["file"], entry.sha256)
            return source
        self._verifyOnce(source, entry.sha256)
        if zipfile.is_zipfile(source) and entry.task == "segmentation":
            return self._extract(source, self.cacheDir / entry.cacheName)
        return source

    def _verifyOnce(self, path: Path, sha256: str) -> None:
        if not path.is_file():
            raise RegistryError(f"model file {path} is missing")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._verified:
            verifySha256(path, sha256)
            self._verified.add(key)

    def _extract(self, archive: Path, target: Path) -> Path:
        if (target / CARD_FILE).is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
            packageDir = _findPackageRoot(staging)
            readCard(packageDir)
            if target.exists():
                shutil.rmtree(target)
            os.replace(packageDir, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    # -- import ---------------------------------------------------------------------------------------
    def importModel(self, source: Path) -> ModelEntry:
        """Copy a local package folder or .zip into the cache after checking its card and weights."""
        source = Path(source)
        if not source.exists():
            raise RegistryError(f"cannot import {source}: it does not exist")
        imported = self.cacheDir / "imported"
        imported.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=imported))
        try:
            if source.is_dir():
                packageDir = staging / "package"
                shutil.copytree(source, packageDir)
            elif zipfile.is_zipfile(source):
                with zipfile.ZipFile(source) as zf:
                    zf.extractall(staging)
                packageDir = _findPackageRoot(staging)
            else:
                raise RegistryError(f"cannot import {source}: choose a model package folder or a .zip of one")
            card = readCard(packageDir)
            weights = packageDir / card["weights"]["file"]
            if not weights.is_file():
                raise RegistryError(
                    f"cannot import {source}: weights file {card['weights']['file']} is missing"
                )
            if card["weights"].get("sha256"):
                try:
                    verifySha256(weights, card["weights"]["sha256"])
                except DownloadError as exc:
                    raise RegistryError(f"cannot import {source}: {exc}") from None
            modelId = _slug(f"{card.get('name', source.stem)}-{card.get('version', '')}")
            target = imported / modelId
            if target.exists():
                shutil.rmtree(target)
            os.replace(packageDir, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.entryFromPackage(target, modelId)


def _findPackageRoot(folder: Path) -> Path:
    cards = sorted(folder.rglob(CARD_FILE), key=lambda p: len(p.parts))
    if not cards:
        raise RegistryError(f"the archive holds no {CARD_FILE}: it is not a model package")
    return cards[0].parent


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"
