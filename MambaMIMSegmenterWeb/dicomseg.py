"""DICOM SEG download: the engine's DICOM SEG writer, when this installation has it.

The writer belongs to the engine (results out); the web app only finds it and says why when it can't.
``WRITER`` names it in one place.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# (module, function): write_dicom_seg(label_map, source_dicom_dir, labels, out_path, ...), where
# label_map is a label map file on the series' grid and labels are card records {value, name, color, ...}.
WRITER = ("mambamim.infer.outputs.dicom_seg", "write_dicom_seg")


def find_writer() -> tuple[Callable | None, str]:
    """The writer and "", or None and the reason a user can act on."""
    module_name, function_name = WRITER
    try:
        module = importlib.import_module(module_name)
        import highdicom  # noqa: F401  (imported by the writer only when it runs)
    except ImportError as exc:
        missing = exc.name or module_name
        return None, f"DICOM SEG export is not installed here ({missing} is missing)"
    writer = getattr(module, function_name, None)
    if writer is None:
        return None, f"DICOM SEG export is not installed here ({module_name} has no {function_name})"
    return writer, ""


def unavailable_reason(from_dicom: bool) -> str:
    """Why the DICOM SEG button is off for the current case, or "" when it is on."""
    if not from_dicom:
        return "DICOM SEG needs a scan loaded from a DICOM series (a zipped series or a folder)"
    return find_writer()[1]
