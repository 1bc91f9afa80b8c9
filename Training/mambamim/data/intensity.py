"""Intensity normalisation shared by training (MONAI pipelines) and inference (model card).

A spec is a small JSON-able dict stored in configs and model cards, so the exact same mapping runs
at training and at inference time:

- ``{"type": "window", "lower": -175.0, "upper": 250.0}``: clip to [lower, upper], scale to [0, 1]
  (the MambaMIM / Swin UNETR CT recipe).
- ``{"type": "zscore"}``: per-volume z-score over voxels != 0 (MRI; background stays 0).
- ``{"type": "clip_zscore", "lower", "upper", "mean", "std"}``: clip to [lower, upper], then subtract
  ``mean`` and divide by ``std``, all fixed numbers (nnU-Net v2's ``CTNormalization``, with the dataset's
  foreground percentiles 0.5 / 99.5, mean and std from its plans).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mambamim.errors import InvalidInput

if TYPE_CHECKING:
    import torch

CT_WINDOW: dict[str, Any] = {"type": "window", "lower": -175.0, "upper": 250.0}
MR_ZSCORE: dict[str, Any] = {"type": "zscore"}


def validate_intensity_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Return a normalised copy of ``spec`` or raise ``ValueError`` saying what is wrong."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise InvalidInput(f"intensity spec must be a dict with a 'type' key, got {spec!r}")
    kind = spec["type"]
    if kind == "window":
        try:
            lower, upper = float(spec["lower"]), float(spec["upper"])
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(f"window spec needs numeric 'lower' and 'upper', got {spec!r}") from None
        if not upper > lower:
            raise InvalidInput(f"window intensity spec needs upper > lower, got lower={lower}, upper={upper}")
        return {"type": "window", "lower": lower, "upper": upper}
    if kind == "zscore":
        return {"type": "zscore"}
    if kind == "clip_zscore":
        try:
            values = {key: float(spec[key]) for key in ("lower", "upper", "mean", "std")}
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(f"clip_zscore needs numeric lower, upper, mean, std; got {spec!r}") from None
        if not values["upper"] > values["lower"] or not values["std"] > 0:
            raise InvalidInput(f"clip_zscore spec needs upper > lower and std > 0, got {spec!r}")
        return {"type": "clip_zscore", **values}
    raise InvalidInput(
        f"unknown intensity spec type {kind!r}; valid types: 'window', "
        "'zscore', 'clip_zscore'"
    )


def parse_intensity(text: str) -> dict[str, Any]:
    """A spec from what a user types: ``ct`` (the CT window), ``zscore`` (MRI), ``window:LOWER:UPPER``,
    ``clip_zscore:LOWER:UPPER:MEAN:STD`` (nnU-Net's CT normalisation); also (older spellings) ``mr`` and
    a spec as a JSON object (inline, or a file holding one)."""
    import json
    from pathlib import Path

    named = {"ct": CT_WINDOW, "zscore": MR_ZSCORE, "mr": MR_ZSCORE}
    if text in named:
        return dict(named[text])
    kind, _, rest = text.partition(":")
    fields = {"window": ("lower", "upper"), "clip_zscore": ("lower", "upper", "mean", "std")}.get(kind)
    parts = rest.split(":") if rest else []
    if fields is not None and len(parts) == len(fields):
        try:
            return validate_intensity_spec({"type": kind, **dict(zip(fields, (float(p) for p in parts)))})
        except ValueError:
            pass
    elif text.lstrip().startswith("{") or (len(text) < 1024 and Path(text).is_file()):
        try:
            spec = json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InvalidInput(f"intensity {text!r}: not a readable JSON spec ({err})") from None
        return validate_intensity_spec(spec)
    raise InvalidInput(
        "intensity must be ct, zscore, window:LOWER:UPPER (LOWER < UPPER), "
        f"clip_zscore:LOWER:UPPER:MEAN:STD or a JSON spec, got {text!r}"
    )


def is_legacy_intensity(text: str) -> bool:
    """Whether ``text`` is an older spelling :func:`parse_intensity` still takes (``mr``, JSON)."""
    return text == "mr" or not (text in ("ct", "zscore") or text.startswith(("window:", "clip_zscore:")))


def normalize_intensity(volume: np.ndarray | torch.Tensor, spec: dict[str, Any]) -> np.ndarray | torch.Tensor:
    """Apply ``spec`` to ``volume`` (any shape); returns float32 of the same kind (numpy or torch)."""
    import torch  # here, not at import: the model card and the command-line help read this module

    spec = validate_intensity_spec(spec)
    is_numpy = isinstance(volume, np.ndarray)
    x = torch.as_tensor(volume).to(torch.float32)
    if spec["type"] == "window":
        lower, upper = spec["lower"], spec["upper"]
        out = (x.clamp(lower, upper) - lower) / (upper - lower)
    elif spec["type"] == "clip_zscore":
        out = (x.clamp(spec["lower"], spec["upper"]) - spec["mean"]) / spec["std"]
    else:
        foreground = x != 0
        values = x[foreground] if bool(foreground.any()) else x.reshape(-1)
        mean, std = values.mean(), values.std(unbiased=False)
        out = torch.where(foreground, (x - mean) / std.clamp_min(1e-6), torch.zeros_like(x))
    return out.numpy() if is_numpy else out
