"""Label maps checked before training starts, as nnU-Net's ``verify_dataset_integrity`` does.

A value outside the label table otherwise surfaces mid-run as ``index 15 is out of bounds for dimension 1``
from the one-hot encoding, naming no file. Here every label map is read once (a progress bar on a
terminal), and the first bad file is named with its unexpected values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mambamim.data.progress_bars import terminal_bar
from mambamim.errors import InvalidInput

_SHOWN_VALUES = 8


class LabelValueError(InvalidInput):
    """A label map that does not fit the label table (or is the image itself)."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_label_values(
    items: Sequence[dict[str, Any]], labels: Sequence[dict[str, Any]], show_bar: bool | None = None
) -> None:
    """Every ``item["label"]`` holds only background (0) and values of ``labels`` (``[{value, name}]``).

    ``show_bar=None`` shows a bar only on a terminal. Unreadable files are left to the dataset, which
    reports and skips them.
    """
    from mambamim.data.imageio import read_image

    allowed = {0, *(int(entry["value"]) for entry in labels)}
    labelled = [item for item in items if item.get("label")]
    for item in terminal_bar(labelled, "checking label maps", "file", show_bar):
        if same_file(item["image"], item["label"]):
            raise LabelValueError(
                f"label map {item['label']} is the image itself; pair images with label maps"
            )
        try:
            values = _unique_values(read_image(item["label"], allow_constant=True))
        except (OSError, ValueError, RuntimeError):
            continue  # the dataset reports unreadable files and skips them
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise LabelValueError(
                f"label map {item['label']} holds non-integer value(s) {_listed(fractional)}: "
                "is it a scan rather than a label map?"
            )
        unexpected = sorted(set(values.astype(np.int64).tolist()) - allowed)
        if unexpected:
            raise LabelValueError(
                f"label map {item['label']} holds value(s) {_listed(unexpected)} outside the label table "
                f"(values {_listed(sorted(allowed))}); fix the map or add the label(s) to the table"
            )


def _unique_values(image: Any) -> np.ndarray:
    import SimpleITK as sitk

    return np.unique(sitk.GetArrayViewFromImage(image))


def _listed(values: Sequence[Any] | np.ndarray) -> str:
    values = [v.item() if hasattr(v, "item") else v for v in values]
    text = ", ".join(str(v) for v in values[:_SHOWN_VALUES])
    return text + (f" (+{len(values) - _SHOWN_VALUES} more)" if len(values) > _SHOWN_VALUES else "")
