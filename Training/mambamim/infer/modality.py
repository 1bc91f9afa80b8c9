"""The modality rule, shared by the engine and the Slicer module (numpy only, importable without torch).

A model package's card names the modality it was trained on (``input.modality``: CT or MR). An input's
modality is its DICOM Modality tag (0008,0060) when it has one ("MRI" is read as "MR"); otherwise CT is
recognised by its Hounsfield units: air (-1000) and fat (-100) make the lowest 0.5 % of the voxels
clearly negative, even in a crop inside the body, while MR intensities are non-negative up to noise and
bias correction. (On the shared scans: CT -1023 and -1024, MR -4 and 0.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mambamim.errors import MambaMIMError

CT_LOW_PERCENTILE = 0.5
CT_LOW_VALUE = -50.0
SAMPLE_VOXELS = 2_000_000  # voxels looked at; enough for stable percentiles and counts


class ModalityMismatch(MambaMIMError, ValueError):
    """The input's modality is not the one the model was trained on."""

    def __init__(self, message: str, expected: str, actual: str):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


def sample_voxels(values: Any) -> np.ndarray:
    """An evenly strided sample of at most about ``SAMPLE_VOXELS`` voxels, flattened."""
    flat = np.asarray(values).reshape(-1)
    return flat[:: max(1, flat.size // SAMPLE_VOXELS)]


def modality_rule(values: Any, dicom_modality: str | None = None) -> tuple[str, str]:
    """``(modality, evidence in words)``: "CT", "MR" or another DICOM modality, and why."""
    if dicom_modality is not None and dicom_modality.strip():
        tag = dicom_modality.strip().upper()
        return ("MR" if tag == "MRI" else tag), f"its DICOM Modality tag is {tag}"
    low = float(np.percentile(sample_voxels(values), CT_LOW_PERCENTILE))
    if low < CT_LOW_VALUE:
        return "CT", f"it has no DICOM Modality tag and its darkest voxels ({low:.0f}) look like air in HU"
    return "MR", (
        f"it has no DICOM Modality tag and its darkest voxels ({low:.3g}) are not air in HU "
        f"(a CT has values below {CT_LOW_VALUE:.0f})"
    )


def guess_modality(values: Any, dicom_modality: str | None = None) -> str:
    """The modality alone, by :func:`modality_rule`."""
    return modality_rule(values, dicom_modality)[0]


def check_modality(expected: str, modality: str | None, package_path: str | Path) -> None:
    """Refuse (``ModalityMismatch``) a package made for ``expected`` (its card's ``input.modality``) when
    the input is ``modality``."""
    if modality is not None and modality.upper() != expected:
        raise ModalityMismatch(
            f"model package {package_path} is for {expected} images but the input was declared "
            f"{modality.upper()}; choose a {modality.upper()} model",
            expected,
            modality.upper(),
        )
