"""`evaluate`: Normalized Surface Dice, volumes in mL, cases named by the prediction, unmatched files."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from mambamim.data.imageio import read_image, write_image
from mambamim.data.labels import parse_labels
from mambamim.infer.evaluate import compare_label_maps, evaluate_paths, parse_nsd_tolerance

CUBE = [{"value": 1, "name": "cube"}]


def shifted_cubes(shift: int, spacing=(1.0, 1.0, 1.0)):
    ref = np.zeros((24, 24, 24), np.uint8)
    pred = np.zeros_like(ref)
    ref[6:16, 6:16, 6:16] = 1
    pred[6:16, 6:16, 6 + shift : 16 + shift] = 1  # shifted along x
    images = [sitk.GetImageFromArray(a) for a in (pred, ref)]
    for image in images:
        image.SetSpacing(spacing)
    return images


def test_nsd_counts_boundaries_within_the_tolerance_in_millimetres():
    pred, ref = shifted_cubes(shift=2)
    # The x faces are 2 voxels apart, every other boundary point is within 1: a 2.5 mm tolerance covers all.
    assert compare_label_maps(pred, ref, CUBE, nsd_tolerance=2.5)[0]["nsd"] == pytest.approx(1.0)
    tight = compare_label_maps(pred, ref, CUBE, nsd_tolerance=0.5)[0]["nsd"]
    assert 0.3 < tight < 1.0
    # The same voxels at 2 mm along x are 4 mm apart: 2.5 mm no longer covers the x faces.
    pred2, ref2 = shifted_cubes(shift=2, spacing=(2.0, 1.0, 1.0))
    assert compare_label_maps(pred2, ref2, CUBE, nsd_tolerance=2.5)[0]["nsd"] < 1.0
    # Per class, by name or value; the rest keep the default.
    by_name = compare_label_maps(pred, ref, CUBE, nsd_tolerance={"cube": 0.5, "default": 9})[0]["nsd"]
    by_value = compare_label_maps(pred, ref, CUBE, nsd_tolerance={1: 0.5})[0]["nsd"]
    assert by_name == by_value == pytest.approx(tight)
    assert parse_nsd_tolerance(["2"]) == 2.0
    assert parse_nsd_tolerance(["2", "liver=3", "5=1"]) == {"default": 2.0, "liver": 3.0, 5: 1.0}
    with pytest.raises(ValueError, match="positive"):
        parse_nsd_tolerance(["liver=0"])


def test_real_labels_volumes_and_missed_organ(data_dir, tmp_path):
    folder = data_dir / "ct_abdomen"
    labels = parse_labels(json.loads((folder / "labels_btcv13.json").read_text()))
    ref = read_image(folder / "ct_labels_btcv13.nii.gz", allow_constant=True)
    array = sitk.GetArrayFromImage(ref)
    array[array == 6] = 0  # the liver is missed
    pred = sitk.GetImageFromArray(array)
    pred.CopyInformation(ref)
    rows = {r["name"]: r for r in compare_label_maps(pred, ref, labels, hd95=False)}
    assert rows["spleen"]["nsd"] == pytest.approx(1.0) and rows["spleen"]["dice"] == pytest.approx(1.0)
    assert rows["liver"]["status"] == "missing_in_pred" and rows["liver"]["nsd"] == 0.0
    assert rows["liver"]["ref_ml"] == pytest.approx(rows["liver"]["ref_voxels"] * 0.027)  # 3 mm voxels
    assert rows["liver"]["pred_ml"] == 0.0 and 1000 < rows["liver"]["ref_ml"] < 3000
    assert rows["esophagus"]["status"] == "absent" and rows["esophagus"]["nsd"] is None


def test_folders_report_unmatched_files_and_name_cases_by_prediction(tmp_path, capsys):
    from mambamim.commands import evaluate as command

    pred, ref = shifted_cubes(shift=1)
    write_image(pred, tmp_path / "pred" / "a_seg.nii.gz")
    write_image(pred, tmp_path / "pred" / "stray.nii.gz")  # no reference
    write_image(ref, tmp_path / "ref" / "a.nii.gz")
    write_image(ref, tmp_path / "ref" / "b.nii.gz")  # no prediction
    rows = evaluate_paths(tmp_path / "pred", tmp_path / "ref", CUBE)
    assert [(r["case"], r["status"]) for r in rows] == [
        ("a_seg", "present"),
        ("stray", "no_reference"),
        ("b", "no_prediction"),
    ]
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    out = tmp_path / "scores.csv"
    argv = ["--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(out)]
    assert command.run(parser.parse_args([*argv, "--nsd-tolerance", "0.5"])) == 0
    captured = capsys.readouterr()
    assert "stray.nii.gz has no reference" in captured.err and "b.nii.gz has no prediction" in captured.err
    assert "NSD" in captured.out and "1 case(s)" in captured.out
    table = list(csv.DictReader(out.open()))
    assert [r["status"] for r in table] == ["present", "no_reference", "no_prediction"]
    assert table[0]["prediction"].endswith("a_seg.nii.gz") and table[0]["reference"].endswith("a.nii.gz")
    assert 0 < float(table[0]["nsd"]) < 1 and float(table[0]["ref_ml"]) == pytest.approx(1.0)
    # One file against one file: the case is the prediction's name, not the reference's.
    single = evaluate_paths(tmp_path / "pred" / "stray.nii.gz", tmp_path / "ref" / "a.nii.gz", CUBE)
    assert single[0]["case"] == "stray"
