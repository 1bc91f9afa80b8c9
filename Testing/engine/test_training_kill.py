"""Training survives SIGKILL: at most one checkpoint interval is lost, and ``--resume`` then reaches
exactly the weights of an uninterrupted run; the run folder never holds a partial file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mambamim.checkpoint import load_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "Training" / "pretrain.py"
RUN_FILES = {
    "last.pt",
    "config.json",
    "train_log.csv",
    "epochs.csv",
    "encoder.safetensors",
    "tensorboard",
    "progress.png",
}


def logged_steps(run: Path) -> int:
    log = run / "train_log.csv"
    return max(len(log.read_text().splitlines()) - 1, 0) if log.is_file() else 0


@pytest.mark.slow
def test_sigkill_then_resume_reaches_the_uninterrupted_weights(tmp_path, sample_ct):
    data = tmp_path / "dataset.json"
    data.write_text(json.dumps({"training": [{"image": str(sample_ct)}, {"image": str(sample_ct)}]}))
    staging = tmp_path / "tmp"
    staging.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(staging)}
    # tiny preset, 2 steps per epoch, 3 epochs; a checkpoint after every step
    command = [sys.executable, str(SCRIPT), str(data), "--preset", "tiny", "--epochs", "3", "--spacing", "3",
               "--batch", "1", "--num-samples", "1", "--no-progress", "--checkpoint-every", "1"]  # fmt: skip

    full = subprocess.run([*command, "-o", str(tmp_path / "full")], env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr

    run = tmp_path / "killed"
    process = subprocess.Popen([*command, "-o", str(run)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while logged_steps(run) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    done = logged_steps(run)
    assert 3 <= done < 6, "the kill must land mid-run"
    saved = load_checkpoint(run / "last.pt", expected_format="mambamim-pretrain")
    assert done - 1 <= saved["step"] <= done, "more than one checkpoint interval was lost"
    assert {p.name for p in run.iterdir()} <= RUN_FILES, "a partial file was left in the run folder"

    resumed = subprocess.run([*command, "-o", str(run), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {saved['step']}" in resumed.stderr
    reference = load_checkpoint(tmp_path / "full" / "last.pt")
    final = load_checkpoint(run / "last.pt")
    assert final["step"] == reference["step"] == 6
    for name, value in reference["model"].items():
        assert torch.equal(value, final["model"][name]), name
    # The killed process's staging folder, if the kill caught a write, was swept by the resumed run.
    assert not [p for p in staging.iterdir() if p.name.startswith("mambamim-partial-")]
