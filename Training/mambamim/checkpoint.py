"""Atomic, weights-only training checkpoints and the RNG state they carry.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, written with ``torch.save``
through :func:`mambamim.safe_write.safe_write` (a temporary file away from the run folder, flushed to
disk, then renamed over the target), so a crash or SIGKILL mid-write never leaves a truncated
checkpoint or a stray temporary file in the run folder. Loading uses ``weights_only=True``: no arbitrary
pickles are ever executed, which is why RNG states are stored as tensors and plain numbers.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mambamim.errors import MambaMIMError
from mambamim.safe_write import safe_write


class CheckpointError(MambaMIMError, ValueError):
    """A checkpoint is missing, corrupt, or not the kind the caller expects; the message names the file."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    with safe_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", expected_format: str | None = None
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; clear errors for missing, corrupt or foreign files.

    ``expected_format`` (e.g. ``"mambamim-pretrain"``) is checked against the payload's ``format``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a weights-only torch file ({reason})"
        ) from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"{path} is not a mambamim checkpoint (no 'format' entry)")
    if expected_format is not None and payload["format"] != expected_format:
        raise CheckpointError(f"{path} is a {payload['format']!r} checkpoint, expected {expected_format!r}")
    return payload


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and python RNG states as tensors / plain types."""
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global RNG is what third-party code draws from)
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when the devices are present)."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            np_state["keys"].cpu().numpy().astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
