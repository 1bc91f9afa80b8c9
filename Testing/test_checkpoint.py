"""Checkpoints: atomic writes, weights-only loading, RNG round trip, clear errors for bad files."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch
from mambamim.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mambamim.engine.setup import load_model_state
from monai.networks.nets import UNet


def _draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]  # noqa: NPY002


def test_round_trip_with_rng_state_is_weights_only(tmp_path):
    model = UNet(3, 1, 2, channels=(4, 8), strides=(2,))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.rand(1, 1, 8, 8, 8)).mean().backward()
    optimizer.step()
    payload = {
        "format": "mambamim-finetune", "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "step": 3, "rng": capture_rng_state(),
    }  # fmt: skip
    expected = _draws()
    path = save_checkpoint(tmp_path / "last.pt", payload)
    # weights_only=True must accept every entry (no pickled numpy/python objects).
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == 3
    assert torch.equal(loaded["model"]["model.0.conv.weight"], model.model[0].conv.weight)
    restore_rng_state(load_checkpoint(path, expected_format="mambamim-finetune")["rng"])
    assert _draws() == expected
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary files left


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"format": "x", "step": 1})
    with pytest.raises(Exception):  # noqa: B017 - torch.save raises pickling errors of several types
        save_checkpoint(path, {"format": "x", "step": 2, "bad": lambda: None})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_clear_errors_for_missing_corrupt_foreign_and_pickled_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    good = save_checkpoint(tmp_path / "good.pt", {"format": "mambamim-pretrain", "step": 1})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"truncated\.pt is corrupt"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match=r"good\.pt is a 'mambamim-pretrain' checkpoint, expected"):
        load_checkpoint(good, expected_format="mambamim-finetune")
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match=r"plain\.pt is not a mambamim checkpoint"):
        load_checkpoint(plain)
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": "mambamim-pretrain", "hook": os.getcwd}, f)  # arbitrary callable: refused
    with pytest.raises(CheckpointError, match=r"evil\.pt"):
        load_checkpoint(evil)


def test_checkpoint_of_another_model_names_the_file(tmp_path):
    small = UNet(3, 1, 2, channels=(4, 8), strides=(2,))
    large = UNet(3, 1, 2, channels=(8, 16), strides=(2,))
    with pytest.raises(CheckpointError, match=r"other\.pt does not fit this model"):
        load_model_state(large, small.state_dict(), tmp_path / "other.pt")
