"""The modality rule, shared by the engine and the Slicer module (numpy only, importable without torch).

A model package's card names the modality it was trained on (``input.modality``: CT or MR). An input's
modality is its DICOM Modality tag when it has one; otherwise CT is recognised by its Hounsfield units:
air (-1000) and fat (-100) make the lowest 0.5 % of the voxels clearly negative, even in a crop inside
the body, while MR intensities are non-negative up to noise and bias correction (the sample MR's 0.5th
percentile is -4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

CT_LOW_PERCENTILE = 0.5
CT_LOW_VALUE = -50.0
_SAMPLE_VOXELS = 200_000


class ModalityMismatch(ValueError):
    """The input's modality is not the one the model was trained on."""

    def __init__(self, message: str, expected: str, actual: str):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


def modality_from_tag(tag: Optional[str]) -> Optional[str]:
    """A DICOM Modality value normalised ("MRI" -> "MR"); None when empty."""
    if not tag or not tag.strip():
        return None
    value = tag.strip().upper()
    return "MR" if value == "MRI" else value


def guess_modality(values: np.ndarray, dicom_modality: Optional[str] = None) -> str:
    """ "CT" or "MR" (or another DICOM modality) from the tag when present, else from intensities."""
    tagged = modality_from_tag(dicom_modality)
    if tagged:
        return tagged
    flat = np.asarray(values).reshape(-1)
    sample = flat[:: max(1, flat.size // _SAMPLE_VOXELS)]
    return "CT" if float(np.percentile(sample, CT_LOW_PERCENTILE)) < CT_LOW_VALUE else "MR"


def check_modality(card: dict[str, Any], modality: Optional[str], package_path: Union[str, Path]) -> None:
    """Refuse a package made for another modality or more input channels than one image provides."""
    expected = card["input"]["modality"]
    if modality is not None and modality.upper() != expected:
        raise ModalityMismatch(
            f"model package {package_path} is for {expected} images but the input was declared "
            f"{modality.upper()}; choose a {modality.upper()} model",
            expected,
            modality.upper(),
        )
    if int(card["input"]["channels"]) != 1:
        raise ValueError(
            f"model package {package_path} needs {card['input']['channels']} input channels; "
            "segment takes one image"
        )
