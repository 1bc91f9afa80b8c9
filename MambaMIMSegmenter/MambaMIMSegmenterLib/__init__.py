"""Qt-free logic of the MambaMIM Segmenter Slicer module (usable from the Python console and scripts)."""

from .logic import EngineJob, SegmenterLogic, defaultCacheDir
from .progress import JsonLinesParser, ProgressEvent
from .registry import ModelEntry, ModelRegistry, RegistryError
from .resources import resourcePath
from .runner import EngineCancelled, EngineError, ProcessRunner
from .volumeio import InputError

__all__ = [
    "EngineCancelled",
    "EngineError",
    "EngineJob",
    "InputError",
    "JsonLinesParser",
    "ModelEntry",
    "ModelRegistry",
    "ProcessRunner",
    "ProgressEvent",
    "RegistryError",
    "SegmenterLogic",
    "defaultCacheDir",
    "resourcePath",
]
