"""Load the overlapping part of a state dict and say exactly what was left out.

Used where checkpoints and models legitimately differ: a published encoder carrying bidirectional scan
parameters (``A_b_log``, ``conv1d_b`` ...) loaded into a one-directional Mamba, or pre-trained encoder
weights loaded into a segmentation network whose decoder starts fresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class LoadReport:
    """Outcome of :func:`load_partial_state_dict`; each list holds state-dict key names."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[str] = field(default_factory=list)
    # key -> (shape in the checkpoint, shape in the model) for every shape-mismatched key
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def summary(self, max_keys: int = 10) -> str:
        """Human-readable multi-line account, listing at most ``max_keys`` keys per category."""
        total = len(self.matched) + len(self.missing) + len(self.shape_mismatched)
        lines = [f"loaded {len(self.matched)}/{total} model tensors"]
        sections = (
            ("missing (left at their initial values)", self.missing),
            ("unexpected (in the checkpoint, ignored)", self.unexpected),
        )
        for title, keys in sections:
            if keys:
                lines.append(f"{len(keys)} {title}: {_abbreviate(keys, max_keys)}")
        if self.shape_mismatched:
            described = [
                f"{key} checkpoint {list(self.shapes[key][0])} vs model {list(self.shapes[key][1])}"
                for key in self.shape_mismatched
            ]
            listed = _abbreviate(described, max_keys)
            lines.append(f"{len(described)} shape mismatched (not loaded): {listed}")
        return "\n".join(lines)


def _abbreviate(items: list[str], max_items: int) -> str:
    shown = ", ".join(items[:max_items])
    return shown if len(items) <= max_items else f"{shown}, ... ({len(items) - max_items} more)"


def load_partial_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> LoadReport:
    """Copy every tensor of ``state_dict`` whose key and shape exist in ``model``; report the rest.

    Shape mismatches are reported and skipped, never loaded or broadcast.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of key -> tensor, got {type(state_dict).__name__}")
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise TypeError(f"state_dict values must be tensors; not tensors: {_abbreviate(not_tensors, 5)}")
    own = model.state_dict()
    report = LoadReport()
    loadable: dict[str, torch.Tensor] = {}
    for key, target in own.items():
        if key not in state_dict:
            report.missing.append(key)
        elif state_dict[key].shape != target.shape:
            report.shape_mismatched.append(key)
            report.shapes[key] = (tuple(state_dict[key].shape), tuple(target.shape))
        else:
            report.matched.append(key)
            loadable[key] = state_dict[key]
    report.unexpected = [key for key in state_dict if key not in own]
    model.load_state_dict(loadable, strict=False)
    return report


def strict_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """One line saying why ``state_dict`` cannot load strictly into ``model``, or None when it can.

    Counts missing, unexpected and shape-mismatched keys with up to three examples each, so an error
    names what does not fit instead of PyTorch's multi-line dump.
    """
    own = model.state_dict()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    mismatched = [
        f"{key} {list(state_dict[key].shape)} vs {list(own[key].shape)}"
        for key in own
        if key in state_dict and tuple(state_dict[key].shape) != tuple(own[key].shape)
    ]
    parts = [
        f"{len(keys)} {label} ({_abbreviate(keys, 3)})"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape-mismatched, checkpoint vs model", mismatched),
        )
        if keys
    ]
    return "; ".join(parts) or None
