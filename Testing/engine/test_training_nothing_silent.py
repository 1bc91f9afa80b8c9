"""Nothing silent in training: partial encoders, changed pre-training settings, --resume --epochs,
labels and caveats carried to the package, progress.png and the TensorBoard notice."""

from __future__ import annotations

import argparse
import io
import sys

import pytest
from mambamim.engine.finetune import PRESETS, load_pretrained, make_config, run_finetune
from mambamim.engine.pretrain import export_encoder
from mambamim.engine.pretrain import make_config as pretrain_config
from mambamim.engine.pretrained import read_encoder_metadata, warn_on_setting_changes
from mambamim.mim.model import MambaMIM
from mambamim.nn import build_model
from safetensors.torch import load_file, save_file

TINY = PRESETS["tiny"]["model"]


@pytest.fixture
def encoder_file(tmp_path):
    """An encoder exported as pre-training does, with the tiny pre-training preset's settings."""
    config = pretrain_config("tiny", data="unused", spacing=[1.5, 1.5, 1.5])
    path = tmp_path / "encoder.safetensors"
    export_encoder(MambaMIM(encoder_config=TINY), path, config)
    return path


def test_encoder_file_stores_architecture_spacing_and_intensity(encoder_file):
    saved = read_encoder_metadata(encoder_file)
    assert saved["architecture"] == {"name": "hymamba", "encoder_config": TINY}
    assert saved["spacing"] == [1.5, 1.5, 1.5] and saved["intensity"]["type"] == "window"
    assert saved["roi"] == 32


def test_changed_settings_warn_and_equal_settings_do_not(encoder_file, tmp_path):
    messages: list[str] = []
    same = make_config("tiny", data="x", spacing=[1.5, 1.5, 1.5])
    warn_on_setting_changes(encoder_file, "hymamba", same.model, same, messages.append)
    assert messages == []
    other = make_config("tiny", data="x", spacing=[3.0, 3.0, 3.0], intensity={"type": "zscore"},
                        model={"d_state": 8})  # fmt: skip
    warn_on_setting_changes(encoder_file, "hymamba", other.model, other, messages.append)
    assert len(messages) == 1
    assert "spacing [1.5, 1.5, 1.5] mm vs [3.0, 3.0, 3.0] mm" in messages[0]
    assert "intensity" in messages[0] and "zscore" in messages[0] and "encoder d_state 4 vs 8" in messages[0]
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(encoder_file)), str(bare))  # weights without the settings header
    warn_on_setting_changes(bare, "hymamba", same.model, same, messages.append)
    assert "stores no pre-training settings" in messages[-1]


def test_pretraining_checkpoint_settings_are_compared_too(tmp_path):
    from mambamim.checkpoint import save_checkpoint
    from mambamim.engine.setup import config_to_dict
    from mambamim.mim.model import PRETRAIN_FORMAT

    mim = MambaMIM(encoder_config=TINY)
    training = config_to_dict(pretrain_config("tiny", data="unused", spacing=[2.0, 2.0, 2.0]))
    path = save_checkpoint(tmp_path / "last.pt", {
        "format": PRETRAIN_FORMAT, "format_version": 1,
        "config": {"model": mim.config.as_dict(), "training": training},
        "model": mim.state_dict(),
    })  # fmt: skip  (the payload run_pretrain writes, less the optimiser state)
    messages: list[str] = []
    run = make_config("tiny", data="x", spacing=[3.0, 3.0, 3.0])
    model = build_model("hymamba", out_channels=3, **TINY)
    load_pretrained(model, path, messages.append)
    warn_on_setting_changes(path, "hymamba", run.model, run, messages.append)
    assert "spacing [2.0, 2.0, 2.0] mm vs [3.0, 3.0, 3.0] mm" in messages[-1]
    assert "encoder " not in messages[-1]  # same architecture


def test_partial_encoder_is_an_error_unless_allowed(encoder_file, tmp_path):
    weights = load_file(str(encoder_file))
    dropped = sorted(weights)[5]
    del weights[dropped]
    partial = tmp_path / "partial.safetensors"
    save_file(weights, str(partial))
    model = build_model("hymamba", out_channels=3, **TINY)
    messages: list[str] = []
    with pytest.raises(
        ValueError, match=rf"1 encoder tensor\(s\) missing from the file \({dropped}\).*--allow-partial"
    ):
        load_pretrained(model, partial, messages.append)
    load_pretrained(model, partial, messages.append, allow_partial=True)
    assert messages[-1].startswith("warning:") and dropped in messages[-1]

    other_state = build_model("hymamba", out_channels=3, **{**TINY, "d_state": 8})  # SSM tensors differ
    with pytest.raises(ValueError, match=r"encoder tensor\(s\) of another shape \(encoder\..*A_log"):
        load_pretrained(other_state, encoder_file, messages.append)
    load_pretrained(build_model("hymamba", out_channels=3, **TINY), encoder_file, messages.append)  # fits


def test_tensorboard_missing_gives_one_notice(tmp_path, monkeypatch, capsys):
    from mambamim.engine.monitor import TrainingMonitor

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monitor = TrainingMonitor(tmp_path, 4, 0, True, ["mean_dice", "dice_liver"], show_bar=False)
    for step in range(1, 5):
        monitor.step(step, 1 + (step - 1) // 2, 1.0 / step, 1e-3 * (5 - step) / 4, 2.0, 0.1)
        if step % 2 == 0:
            monitor.epoch(step // 2, step, {"mean_dice": 0.1 * step, "dice_liver": 0.1 * step})
    monitor.close()
    notices = [line for line in capsys.readouterr().err.splitlines() if "TensorBoard" in line]
    assert len(notices) == 1 and "not installed" in notices[0]
    _assert_png(tmp_path / "progress.png")


def _assert_png(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (900, 800)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 10  # curves were drawn, not a blank canvas


@pytest.mark.slow
def test_resume_with_more_epochs_extends_and_package_needs_no_labels(tmp_path, liver_dataset, capsys):
    from mambamim.commands import package as command
    from mambamim.infer.package import load_package

    config = make_config("tiny", data=str(liver_dataset), epochs=1, spacing=[6.0, 6.0, 6.0])
    out = tmp_path / "run"
    first = run_finetune(config, out, show_bar=False)
    assert first.status == "completed" and first.epoch == 1
    _assert_png(out / "progress.png")
    with pytest.raises(ValueError, match=r"--epochs 0 with --resume.*can only be extended"):
        run_finetune(config, out, resume="auto", show_bar=False, epochs=0)
    extended = run_finetune(config, out, resume="auto", show_bar=False, epochs=3)
    assert extended.status == "completed" and extended.epoch == 3 and extended.step == 3
    assert "extending the run from 1 to 3 epochs" in capsys.readouterr().err
    assert len((out / "epochs.csv").read_text().splitlines()) == 1 + 3  # header + the three epochs

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(
        ["--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "pkg")]
    )  # no --labels
    assert command.run(args) == 0
    card = load_package(tmp_path / "pkg").card
    assert [(e.value, e.name) for e in card.labels] == [(1, "liver")]
    assert "validation on the training scan: optimistic" in card.metrics["validation"]
    assert card.metrics["validation"] == load_package(out / "package").card.metrics["validation"]
    assert card.metrics["epochs"] == 3


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_caching_and_validation_show_bars_on_a_terminal(tmp_path, data_dir, monkeypatch):
    from mambamim.data.dataset import VolumeDataset
    from mambamim.data.progress_bars import terminal_bar
    from mambamim.data.transforms import validation_transforms
    from mambamim.engine.distributed import init_distributed
    from mambamim.engine.finetune import label_table, validate
    from tiny_nnunet import make_tiny_nnunet_dataset

    dataset_dir = make_tiny_nnunet_dataset(tmp_path, data_dir)
    config = make_config("tiny", data=str(dataset_dir), spacing=[6.0, 6.0, 6.0])
    items = [{"image": str(dataset_dir / "imagesTr" / "abd_004_0000.nii.gz"),
              "label": str(dataset_dir / "labelsTr" / "abd_004.nii.gz")}]  # fmt: skip
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    dataset = VolumeDataset(items, validation_transforms(config.spacing, config.intensity, (config.roi,) * 3))
    # The bar opens at 0/1 (whether tqdm redraws it at 1/1 depends on how fast the volume loads).
    assert "caching volumes" in terminal.getvalue() and "0/1" in terminal.getvalue()
    labels = label_table(config)
    model = build_model("hymamba", out_channels=len(labels) + 1, **TINY)
    validate(model, dataset, config, labels, init_distributed("cpu"))
    assert "validating" in terminal.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no bar
    assert list(terminal_bar(range(3), "caching volumes", "volume")) == [0, 1, 2]
    assert sys.stderr.getvalue() == ""
