"""`segment` writes results beside the label map: .seg.nrrd, DICOM SEG, statistics, preview (issue 13 §2)."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from infer_helpers import run_segment
from mambamim.data.imageio import read_image


def test_dicom_input_gets_seg_nrrd_dicom_seg_statistics_preview(data_dir, threshold_pkg, tmp_path, capsys):
    import slicerio

    dicom = data_dir / "ct_abdomen" / "dicom"
    out = tmp_path / "out" / "labels.nii.gz"
    argv = [
        "--model",
        str(threshold_pkg),
        "--input",
        str(dicom),
        "--output",
        str(out),
        "--device",
        "cpu",
        "--progress",
        "none",
        "--statistics",
        "--preview",
    ]
    assert run_segment(argv) == 0
    printed = capsys.readouterr().out
    folder = out.parent
    expected = {
        "labels.nii.gz",
        "labels.seg.nrrd",
        "labels_seg.dcm",
        "labels_statistics.csv",
        "labels_statistics.json",
        "labels_preview.png",
    }
    assert {p.name for p in folder.iterdir()} == expected
    assert "no SNOMED CT code" in printed and "file meta" in printed  # what stands in is said
    labels = sitk.GetArrayFromImage(read_image(out, allow_constant=True))
    seg = slicerio.read_segmentation(str(folder / "labels.seg.nrrd"))
    assert [s["name"] for s in seg["segments"]] == ["body", "bone"]
    np.testing.assert_array_equal(seg["voxels"], labels.transpose(2, 1, 0))
    ds = pydicom.dcmread(folder / "labels_seg.dcm")
    assert ds.Modality == "SEG" and [s.SegmentLabel for s in ds.SegmentSequence] == ["body", "bone"]
    assert ds.ContentDescription.startswith("threshold-test")
    stats = json.loads((folder / "labels_statistics.json").read_text())
    assert stats["body"]["voxels"] == int((labels == 1).sum())
    ct = sitk.GetArrayFromImage(read_image(dicom))
    assert stats["bone"]["intensity_mean"] == pytest.approx(ct[labels == 2].mean())

    # A second run without --overwrite is refused before any work and changes nothing.
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert run_segment(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_opting_out_and_refusals(data_dir, sample_ct, threshold_pkg, tmp_path, capsys):
    small = tmp_path / "in" / "ct.nii.gz"
    small.parent.mkdir()
    sitk.WriteImage(read_image(sample_ct)[::2, ::2, ::2], str(small))
    out = tmp_path / "o" / "a.nii.gz"
    base = ["--model", str(threshold_pkg), "--input", str(small), "--output", str(out), "--progress", "none"]
    assert run_segment([*base, "--no-seg-nrrd"]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["a.nii.gz"]
    # A DICOM SEG needs DICOM input; a name clash with the label map is refused; nothing is written.
    for extra, message in (
        (["--dicom-seg", str(tmp_path / "x.dcm")], "needs a DICOM series folder"),
        (["--seg-nrrd", str(tmp_path / "x.nii.gz")], "must end in .nrrd"),
        (
            ["--seg-nrrd", str(tmp_path / "o2" / "b.nrrd"), "--output", str(tmp_path / "o2" / "b.nrrd")],
            "share one file name",
        ),
        (
            ["--input", str(small.parent), "--output", str(tmp_path / "batch"), "--preview", "p.png"],
            "works with one input volume",
        ),
    ):
        assert run_segment([*base, *extra]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.dcm").exists() and not (tmp_path / "o2").exists()
    assert not (tmp_path / "x.nii.gz").exists()
    assert not (tmp_path / "batch").exists()


def test_batch_mode_writes_the_seg_nrrd_and_statistics_of_every_case(sample_ct, threshold_pkg, tmp_path):
    import slicerio

    folder = tmp_path / "in"
    folder.mkdir()
    scan = read_image(sample_ct)[::2, ::2, ::2]
    sitk.WriteImage(scan, str(folder / "one.nii.gz"))
    sitk.WriteImage(scan[:, :, 8:], str(folder / "two.nrrd"))
    out = tmp_path / "segs"
    argv = ["--model", str(threshold_pkg), "--input", str(folder), "--output", str(out), "--progress", "none"]
    assert run_segment([*argv, "--statistics"]) == 0
    for case in ("one", "two"):
        labels = sitk.GetArrayFromImage(read_image(out / f"{case}_seg.nii.gz", allow_constant=True))
        seg = slicerio.read_segmentation(str(out / f"{case}_seg.seg.nrrd"))
        np.testing.assert_array_equal(seg["voxels"], labels.transpose(2, 1, 0))
        stats = json.loads((out / f"{case}_seg_statistics.json").read_text())
        assert stats["body"]["voxels"] == int((labels == 1).sum())
    # `evaluate` on that folder takes the .seg.nrrd beside each label map for the copy it is.
    from mambamim.infer.evaluate import match_cases

    pairs, no_reference, no_prediction = match_cases(out, out)
    assert sorted(case for case, _, _ in pairs) == ["one_seg", "two_seg"]
    assert not no_reference and not no_prediction
