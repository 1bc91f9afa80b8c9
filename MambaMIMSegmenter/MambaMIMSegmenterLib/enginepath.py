"""Where the engine (the ``mambamim`` package) lives, and importing its light, torch-free parts here.

Installed extension: ``mambamim`` sits next to this library in the module's folder. Source checkout:
it is ``Training/mambamim``. The child process finds it through ``PYTHONPATH``; Slicer's own process
imports only modules that need numpy alone (such as the modality rule), never torch.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

MODULE_DIR = Path(__file__).resolve().parents[1]


def defaultEnginePaths() -> list[str]:
    """Folders to put on the child's PYTHONPATH: the ``mambamim`` copy shipped next to the module
    (installed extension) or ``Training/`` (source checkout)."""
    candidates = (MODULE_DIR, MODULE_DIR.parent / "Training")
    return [str(path) for path in candidates if (path / "mambamim" / "__init__.py").is_file()]


def importEngineModule(name: str) -> ModuleType:
    """``mambamim.<name>`` from the installed package or the copy this module ships with."""
    try:
        return importlib.import_module(f"mambamim.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("mambamim", f"mambamim.{name}"):
            raise
    for path in defaultEnginePaths():
        if path not in sys.path:
            sys.path.append(path)
    return importlib.import_module(f"mambamim.{name}")
