"""Cross-validation: per-class Dice/NSD checked by hand on the real labels, and all five folds of a tiny
model on a tiny nnU-Net dataset, resumed fold by fold."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from mambamim.engine.crossval import METRICS_FILE, case_scores
from tiny_nnunet import make_tiny_nnunet_dataset

LABELS = [{"value": 1, "name": "spleen"}, {"value": 5, "name": "esophagus"}, {"value": 6, "name": "liver"}]


@pytest.fixture(scope="module")
def reference(data_dir):
    voxels = np.asarray(nib.load(data_dir / "ct_abdomen" / "ct_labels_btcv13.nii.gz").dataobj).astype(
        np.int64
    )
    return torch.from_numpy(voxels)[None, None]


def test_scores_against_hand_computation(reference):
    shifted = torch.roll(reference, shifts=1, dims=2)  # one 3 mm voxel along x
    dice, nsd = case_scores(shifted, reference, LABELS, [3.0, 3.0, 3.0], tolerance_mm=2.0)
    ref, pred = (reference == 6).numpy(), (shifted == 6).numpy()
    assert dice["liver"] == pytest.approx(2 * (ref & pred).sum() / (ref.sum() + pred.sum()), rel=1e-6)
    assert dice["esophagus"] is None and nsd["esophagus"] is None  # absent from this scan's reference
    assert 0.0 < nsd["liver"] < 1.0  # a 3 mm shift exceeds a 2 mm tolerance on part of the boundary
    _, tolerant = case_scores(shifted, reference, LABELS, [3.0, 3.0, 3.0], tolerance_mm=3.5)
    assert tolerant["liver"] == pytest.approx(1.0) and tolerant["spleen"] == pytest.approx(1.0)
    same_dice, same_nsd = case_scores(reference, reference, LABELS, [3.0, 3.0, 3.0], tolerance_mm=1.0)
    assert same_dice["spleen"] == pytest.approx(1.0) and same_nsd["liver"] == pytest.approx(1.0)


@pytest.mark.slow
def test_five_folds_in_one_command_resumed_fold_by_fold(tmp_path, data_dir, monkeypatch, capsys):
    from mambamim.cli import main

    make_tiny_nnunet_dataset(tmp_path / "raw", data_dir)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    out = tmp_path / "cv"
    # 4 training crops, 2 volumes per step: 2 steps per fold; 6 mm keeps each case a few windows.
    argv = ["crossval", "42", "-o", str(out), "--preset", "tiny", "--epochs", "1", "--batch", "4",
            "--spacing", "6", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == 5 and len(summary["cases"]) == 5
    assert sorted(c["image"].rsplit("/", 1)[1] for c in summary["cases"]) == [
        f"abd_{i:03d}_0000.nii.gz" for i in range(5)
    ]  # every case validated exactly once
    aorta = next(r for r in summary["classes"] if r["class"] == "aorta")  # in every crop
    assert aorta["cases"] == 5 and 0.0 <= aorta["dice_mean"] <= 1.0 and aorta["dice_sd"] is not None
    values = [c["dice"]["aorta"] for c in summary["cases"]]
    assert aorta["dice_mean"] == pytest.approx(np.mean(values)) and aorta["dice_sd"] == pytest.approx(
        np.std(values, ddof=1)
    )
    assert (out / "summary.csv").read_text().splitlines()[
        0
    ] == "class,cases,dice_mean,dice_sd,nsd_mean,nsd_sd"
    assert "5-fold cross-validation" in captured.out and "liver" in captured.out
    for fold in range(5):
        assert (out / f"fold_{fold}" / "package" / "model.json").is_file()
        assert (out / f"fold_{fold}" / "progress.png").is_file()

    # A finished fold is skipped; a fold with a checkpoint but no scores resumes from it.
    finished = (out / "fold_0" / METRICS_FILE).stat().st_mtime_ns
    (out / "fold_3" / METRICS_FILE).unlink()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier") == 4 and "fold 3/5: resuming" in err
    assert (out / "fold_0" / METRICS_FILE).stat().st_mtime_ns == finished
    assert (out / "fold_3" / METRICS_FILE).is_file()
