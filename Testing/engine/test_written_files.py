"""Files a run writes: one line for a pre-training checkpoint that does not fit its own config, and every
written file follows the user's umask."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from infer_helpers import make_threshold_package, register_threshold_model
from mambamim.checkpoint import save_checkpoint
from mambamim.commands import reconstruct as reconstruct_command
from mambamim.data.imageio import write_csv
from mambamim.engine.pretrain import make_config, run_pretrain
from mambamim.infer.package import write_zip
from mambamim.infer.reconstruct import reconstruct_file
from mambamim.infer.segment import segment_file
from mambamim.mim.model import MambaMIM

TRAINING = {
    "roi": 32,
    "spacing": [6.0, 6.0, 6.0],
    "intensity": {"type": "window", "lower": -175.0, "upper": 250.0},
}


def reconstruct(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    reconstruct_command.add_arguments(parser)
    return reconstruct_command.run(parser.parse_args(argv))


@pytest.mark.parametrize("damage", ["other decoder", "missing keys"])
def test_pretraining_checkpoint_not_fitting_its_config_is_one_line(
    damage, tmp_path, sample_ct, capsys, tiny_mim_encoder
):
    model = MambaMIM(tiny_mim_encoder, decoder_channels=[4, 4, 4, 4, 8])
    if damage == "other decoder":
        weights = MambaMIM(tiny_mim_encoder, decoder_channels=[4, 4, 4, 8, 8]).state_dict()
        expected = "shape-mismatched"
    else:
        weights = {k: v for k, v in model.state_dict().items() if not k.startswith("decoder.")}
        expected = "missing"
    checkpoint = tmp_path / "last.pt"
    config = {"model": model.config.as_dict(), "training": TRAINING}
    save_checkpoint(checkpoint, {"format": "mambamim-pretrain", "config": config, "model": weights})
    out = tmp_path / "out"
    code = reconstruct(["--checkpoint", str(checkpoint), "--input", str(sample_ct), "--output-dir", str(out),
                        "--progress", "none", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert (
        str(checkpoint) in lines[0]
        and "do not fit its own MambaMIM config" in lines[0]
        and expected in lines[0]
    )
    assert not out.exists() or list(out.iterdir()) == []


def modes(folder: Path) -> dict[str, int]:
    """Permission bits of everything under ``folder`` (relative path -> mode)."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            found[str(path.relative_to(folder))] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_every_written_file_follows_the_umask(tmp_path, sample_ct, monkeypatch):
    register_threshold_model(monkeypatch)
    previous = os.umask(0o027)
    try:
        data = tmp_path / "dataset.json"
        data.write_text(json.dumps({"training": [{"image": str(sample_ct)}]}))
        config = make_config(
            "tiny", data=str(data), epochs=1, num_samples=1, batch=1, spacing=[6.0, 6.0, 6.0]
        )
        run = tmp_path / "out" / "run"
        run_pretrain(config, run, show_bar=False)
        reconstruct_file(run / "last.pt", sample_ct, tmp_path / "out" / "recon", device="cpu")
        package = make_threshold_package(tmp_path / "out" / "pkg", spacing=(6.0, 6.0, 6.0))
        write_zip(package, tmp_path / "out" / "pkg.zip")
        segment_file(sample_ct, tmp_path / "out" / "seg" / "labels.nii.gz", package, device="cpu")
        write_csv(tmp_path / "out" / "seg" / "timings.csv", ["case"], [{"case": "ct"}])
    finally:
        os.umask(previous)
    found = modes(tmp_path / "out")
    for name in ("run/last.pt", "run/encoder.safetensors", "run/config.json", "run/train_log.csv",
                 "recon/ct_reconstruction.png", "recon/ct_mask.nii.gz", "pkg/weights.safetensors",
                 "pkg/model.json", "pkg.zip", "seg/labels.nii.gz", "seg/timings.csv"):  # fmt: skip
        assert name in found, name
    wrong = {name: oct(mode) for name, mode in found.items()
             if mode != (0o750 if (tmp_path / "out" / name).is_dir() else 0o640)}  # fmt: skip
    assert not wrong, f"not following umask 027: {wrong}"
    assert torch.load(run / "last.pt", weights_only=True)["step"] >= 1
