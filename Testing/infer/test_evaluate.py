"""Evaluation against hand-built label maps whose Dice and HD95 are known."""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest
import SimpleITK as sitk
from mambamim.infer.evaluate import compare_label_maps, evaluate_paths, summarize

LABELS = [
    {"value": 1, "name": "cube"},
    {"value": 2, "name": "ghost"},
    {"value": 3, "name": "missed"},
    {"value": 4, "name": "extra"},
]


def label_image(array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def maps(shift: int = 2):
    """Reference: a 10³ cube of 1 and a 4³ cube of 3. Prediction: the big cube shifted by ``shift`` along x,
    no label 3, and a 3³ cube of 4 that the reference lacks. Label 2 is in neither."""
    ref = np.zeros((30, 30, 30), np.uint8)
    pred = np.zeros_like(ref)
    ref[5:15, 5:15, 5:15] = 1
    pred[5:15, 5:15, 5 + shift : 15 + shift] = 1  # ITK array order is (z, y, x): last axis is x
    ref[20:24, 20:24, 20:24] = 3
    pred[25:28, 2:5, 2:5] = 4
    return pred, ref


def test_known_dice_and_statuses():
    pred, ref = maps(shift=2)
    rows = {r["name"]: r for r in compare_label_maps(label_image(pred), label_image(ref), LABELS, case="c1")}
    assert rows["cube"]["status"] == "present"
    assert rows["cube"]["dice"] == pytest.approx(2 * 800 / 2000)  # 8x10x10 overlap of two 1000-voxel cubes
    assert (
        rows["ghost"]["status"] == "absent"
        and rows["ghost"]["dice"] is None
        and rows["ghost"]["hd95_mm"] is None
    )
    assert rows["missed"]["status"] == "missing_in_pred" and rows["missed"]["dice"] == 0.0
    assert rows["missed"]["hd95_mm"] is None and rows["missed"]["ref_voxels"] == 64
    assert rows["extra"]["status"] == "missing_in_ref" and rows["extra"]["pred_voxels"] == 27


def test_hd95_is_in_millimetres_along_the_shifted_axis():
    pred, ref = maps(shift=2)
    iso = compare_label_maps(label_image(pred), label_image(ref), LABELS[:1])[0]["hd95_mm"]
    assert iso == pytest.approx(2.0)  # the x faces are 2 voxels apart; nothing is further
    # 1.5 mm voxels along x (the shifted axis): the same maps are 3 mm apart; along z nothing changes.
    x_scaled = compare_label_maps(label_image(pred, (1.5, 1, 1)), label_image(ref, (1.5, 1, 1)), LABELS[:1])
    z_scaled = compare_label_maps(label_image(pred, (1, 1, 3)), label_image(ref, (1, 1, 3)), LABELS[:1])
    assert x_scaled[0]["hd95_mm"] == pytest.approx(3.0)
    assert z_scaled[0]["hd95_mm"] == pytest.approx(2.0)


def test_perfect_prediction():
    _, ref = maps()
    rows = compare_label_maps(label_image(ref), label_image(ref), LABELS[:1])
    assert rows[0]["dice"] == pytest.approx(1.0) and rows[0]["hd95_mm"] == pytest.approx(0.0)


def test_grids_must_match():
    pred, ref = maps()
    moved = label_image(ref)
    moved.SetOrigin((0.0, 0.0, 5.0))
    with pytest.raises(ValueError, match="origin"):
        compare_label_maps(label_image(pred), moved, LABELS)


def test_summary_never_invents_scores():
    rows = []
    for case, shift in (("a", 0), ("b", 2)):
        pred, ref = maps(shift)
        rows += compare_label_maps(label_image(pred), label_image(ref), LABELS, case=case)
    summary = {s["name"]: s for s in summarize(rows)}
    assert summary["cube"]["dice_mean"] == pytest.approx(0.9) and summary["cube"]["dice_sd"] == pytest.approx(
        0.1
    )
    assert summary["ghost"]["dice_mean"] is None and summary["ghost"]["absent"] == 2
    assert summary["missed"]["dice_mean"] == 0.0 and summary["missed"]["hd95_mean"] is None


def test_evaluate_command_folders(tmp_path):
    from mambamim.commands import evaluate as command

    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for case, shift in (("case1", 0), ("case2", 2)):
        pred, ref = maps(shift)
        sitk.WriteImage(label_image(pred), str(tmp_path / "pred" / f"{case}_seg.nii.gz"))
        sitk.WriteImage(label_image(ref), str(tmp_path / "ref" / f"{case}.nii.gz"))
    (tmp_path / "labels.json").write_text('{"0": "background", "1": "cube", "2": "ghost"}')
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    argv = [
        "--pred",
        str(tmp_path / "pred"),
        "--ref",
        str(tmp_path / "ref"),
        "--labels",
        str(tmp_path / "labels.json"),
        "--out",
        str(tmp_path / "scores.csv"),
    ]
    assert command.run(parser.parse_args(argv)) == 0
    with open(tmp_path / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case"], r["name"], r["status"]) for r in rows] == [
        ("case1_seg", "cube", "present"),
        ("case1_seg", "ghost", "absent"),
        ("case2_seg", "cube", "present"),
        ("case2_seg", "ghost", "absent"),
    ]
    assert float(rows[2]["dice"]) == pytest.approx(0.8) and rows[1]["dice"] == ""
    with pytest.raises(FileExistsError, match=r"scores\.csv already exists"):  # refused without --overwrite
        command.run(parser.parse_args(argv))


def test_default_labels_are_the_values_found(tmp_path):
    pred, ref = maps()
    sitk.WriteImage(label_image(pred), str(tmp_path / "p.nrrd"))
    sitk.WriteImage(label_image(ref), str(tmp_path / "r.nrrd"))
    rows = evaluate_paths(tmp_path / "p.nrrd", tmp_path / "r.nrrd")
    assert [r["value"] for r in rows] == [1, 3, 4]
