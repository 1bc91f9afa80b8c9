"""Pre-training engine on the sample CT: exact resume after Ctrl-C, encoder export, loss goes down."""

from __future__ import annotations

import signal

import pytest
import torch
from mambamim.checkpoint import load_checkpoint
from mambamim.engine import monitor as monitor_module
from mambamim.engine.pretrain import make_config, run_pretrain

TINY = {"num_samples": 1, "batch": 1, "spacing": [3.0, 3.0, 3.0]}


@pytest.fixture
def recorded_losses(monkeypatch):
    """Exact per-step losses (the CSV keeps 6 digits), plus an optional SIGINT after a given step."""
    losses: dict[int, float] = {}
    interrupt_after: list[int] = []
    original = monitor_module.TrainingMonitor.step

    def step(self, step, epoch, loss, *args, **kwargs):
        losses[step] = loss
        original(self, step, epoch, loss, *args, **kwargs)
        if interrupt_after and step == interrupt_after[0]:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does: the loop finishes the step and saves

    monkeypatch.setattr(monitor_module.TrainingMonitor, "step", step)
    return losses, interrupt_after


def test_resume_after_interrupt_reproduces_the_uninterrupted_run(tmp_path, sample_ct, recorded_losses):
    losses, interrupt_after = recorded_losses
    data = tmp_path / "dataset.json"
    data.write_text(f'{{"training": [{{"image": "{sample_ct}"}}, {{"image": "{sample_ct}"}}]}}')
    config = make_config("tiny", data=str(data), epochs=2, **TINY)  # 2 steps per epoch, 4 in all

    full = run_pretrain(config, tmp_path / "full", show_bar=False)
    assert full.status == "completed" and full.step == 4
    reference = dict(losses)

    losses.clear()
    interrupt_after.append(1)  # mid-epoch: step 1 of 2 in epoch 1
    stopped = run_pretrain(config, tmp_path / "resumed", show_bar=False)
    assert stopped.status == "interrupted" and stopped.step == 1
    saved = load_checkpoint(tmp_path / "resumed" / "last.pt", expected_format="mambamim-pretrain")
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == (1, 0, 1)

    interrupt_after.clear()
    resumed = run_pretrain(config, tmp_path / "resumed", resume="auto", show_bar=False)
    assert resumed.status == "completed" and resumed.step == 4
    assert losses == reference, "the resumed run's losses differ from the uninterrupted run's"
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    # The CSV log holds each step once, resumed or not.
    steps = [line.split(",")[0] for line in (tmp_path / "resumed" / "train_log.csv").read_text().splitlines()]
    assert steps == ["step", "1", "2", "3", "4"]


def test_encoder_export_loads_into_hymamba_and_bad_inputs_are_clear(tmp_path, sample_ct):
    from mambamim.checkpoint import CheckpointError
    from mambamim.engine.pretrain import PRESETS
    from mambamim.nn import build_model
    from mambamim.nn.state_dict import load_partial_state_dict
    from safetensors.torch import load_file

    config = make_config("tiny", data=str(sample_ct), epochs=1, **TINY)
    run_pretrain(config, tmp_path / "run", show_bar=False)
    encoder = load_file(tmp_path / "run" / "encoder.safetensors")
    hymamba = build_model("hymamba", **PRESETS["tiny"]["model"]["encoder_config"])
    report = load_partial_state_dict(hymamba, encoder)
    assert not [k for k in report.missing if k.startswith("encoder.")] and not report.unexpected
    assert any(k.startswith("encoder.skip_blocks.") for k in encoder)  # the published encoder's skip blocks
    with pytest.raises(FileExistsError, match="already holds a training run"):
        run_pretrain(config, tmp_path / "run", show_bar=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "last.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"broken/last\.pt is corrupt"):
        run_pretrain(config, tmp_path / "broken", resume="auto", show_bar=False)


@pytest.mark.slow
def test_pretraining_lowers_the_masked_loss(tmp_path, sample_ct):
    """A few dozen steps on the sample CT clearly lower the masked loss on a fixed held-out batch.

    Plain-MSE targets (``norm_pix_loss=False``): with per-patch normalised targets a model this small
    needs hundreds of steps before it beats the trivial "predict the patch mean" loss of 1.0.
    """
    from mambamim.data.dataset import VolumeDataset
    from mambamim.data.transforms import pretrain_transforms
    from mambamim.engine.setup import seed_everything
    from mambamim.mim.model import MambaMIM

    config = make_config(
        "tiny", data=str(sample_ct), epochs=24, num_samples=2, batch=2, spacing=[3.0, 3.0, 3.0],
        model={"norm_pix_loss": False},
    )  # fmt: skip
    seed_everything(config.seed)
    initial = MambaMIM(**config.model)  # the run's initial weights
    deterministic, random = pretrain_transforms((32, 32, 32), 4, config.spacing, config.intensity)
    crops = VolumeDataset([{"image": str(sample_ct)}], deterministic, random, seed=1234)[(0, 0)]
    batch = torch.stack([crop["image"] for crop in crops])

    def held_out_loss(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(model(batch, generator=torch.Generator().manual_seed(5)).loss)

    before = held_out_loss(initial)
    result = run_pretrain(config, tmp_path / "run", show_bar=False)
    after = held_out_loss(result.model)
    assert after < 0.5 * before, (before, after)


@pytest.mark.slow
def test_training_script_saves_and_exits_130_on_ctrl_c(tmp_path, sample_ct):
    """``python Training/pretrain.py``: SIGINT finishes the step, writes last.pt, exits with status 130."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "Training" / "pretrain.py"
    out = tmp_path / "run"
    command = [
        sys.executable, str(script), str(sample_ct), "-o", str(out), "--preset", "tiny", "--epochs", "500",
        "--spacing", "3", "--batch", "1", "--num-samples", "1", "--no-progress",
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    log = out / "train_log.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 2:  # at least one step done
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130, stderr
    assert "continue with --resume" in stderr
    saved = load_checkpoint(out / "last.pt", expected_format="mambamim-pretrain")
    assert saved["step"] >= 1 and saved["step"] < 500
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "missing"), "-o", str(tmp_path / "x")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "missing" in bad.stderr and "Traceback" not in bad.stderr
