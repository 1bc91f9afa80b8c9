"""Results out (issue 13 §2): .seg.nrrd, DICOM SEG, statistics and preview, checked with independent readers.

The .seg.nrrd is read back with slicerio (Slicer's own library), the DICOM SEG with pydicom and
highdicom, the statistics are compared with a hand computation through nibabel, all on the real scans
and label maps in ../shared/data.
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from mambamim.data.imageio import read_image
from mambamim.data.labels import parse_labels
from mambamim.infer.outputs.dicom_seg import DicomSegError, write_dicom_seg
from mambamim.infer.outputs.preview import _lps, save_preview
from mambamim.infer.outputs.seg_nrrd import write_seg_nrrd
from mambamim.infer.outputs.statistics import label_statistics, write_statistics

LIVER_SPINE = [
    {"value": 1, "name": "liver", "color": [221, 130, 101], "snomed": {"code": "10200004"}},
    {"value": 2, "name": "spine", "color": [241, 214, 145]},
]


@pytest.fixture
def btcv(data_dir):
    folder = data_dir / "ct_abdomen"
    labels = parse_labels(json.loads((folder / "labels_btcv13.json").read_text()))
    return folder / "ct.nii.gz", folder / "ct_labels_btcv13.nii.gz", labels


def test_statistics_match_a_hand_computation(btcv, tmp_path):
    ct_path, labels_path, labels = btcv
    rows = label_statistics(read_image(labels_path, allow_constant=True), read_image(ct_path), labels)
    # By hand, through another reader: nibabel's arrays and header zooms.
    ct = np.asarray(nib.load(ct_path).dataobj, dtype=np.float64)
    seg_img = nib.load(labels_path)
    seg = np.asarray(seg_img.dataobj).astype(int)
    voxel_ml = float(np.prod(seg_img.header.get_zooms()[:3])) / 1000.0
    assert voxel_ml == pytest.approx(0.027)  # 3 mm isotropic
    by_name = {row["name"]: row for row in rows}
    assert [row["value"] for row in rows] == list(range(1, 14))
    for value in range(1, 14):
        row = rows[value - 1]
        inside = seg == value
        assert row["voxels"] == int(inside.sum())
        assert row["volume_ml"] == pytest.approx(inside.sum() * voxel_ml)
        if inside.any():
            assert row["intensity_mean"] == pytest.approx(ct[inside].mean())
            assert row["intensity_std"] == pytest.approx(ct[inside].std())
    # The esophagus is absent from this scan: no volume and no made-up intensity.
    assert by_name["esophagus"]["voxels"] == 0 and by_name["esophagus"]["intensity_mean"] is None
    assert 1000 < by_name["liver"]["volume_ml"] < 3000 and 20 < by_name["liver"]["intensity_mean"] < 90

    csv_path, json_path = write_statistics(rows, tmp_path / "stats.csv")
    assert (csv_path.name, json_path.name) == ("stats.csv", "stats.json")
    table = {r["name"]: r for r in csv.DictReader(csv_path.open())}
    assert float(table["liver"]["volume_ml"]) == pytest.approx(by_name["liver"]["volume_ml"])
    assert table["esophagus"]["intensity_mean"] == ""
    document = json.loads(json_path.read_text())
    assert document["spleen"]["voxels"] == by_name["spleen"]["voxels"]
    assert document["esophagus"]["intensity_mean"] is None
    with pytest.raises(FileExistsError, match=r"stats\.json"):
        write_statistics(rows, tmp_path / "stats.json")


def test_statistics_refuse_a_scan_on_another_grid(btcv, data_dir):
    _, labels_path, labels = btcv
    with pytest.raises(ValueError, match="size"):
        label_statistics(
            read_image(labels_path, allow_constant=True),
            read_image(data_dir / "ct_abdomen" / "mr.nii.gz"),
            labels,
        )


def test_seg_nrrd_reads_back_in_slicerio(btcv, tmp_path):
    import slicerio

    _, labels_path, labels = btcv
    labels[5]["snomed"] = {"code": "10200004", "meaning": "Liver"}  # liver coded, the rest generic
    label_map = read_image(labels_path, allow_constant=True)
    path = write_seg_nrrd(label_map, labels, tmp_path / "ct.seg.nrrd")
    seg = slicerio.read_segmentation(str(path))
    assert [s["name"] for s in seg["segments"]] == [label["name"] for label in labels]
    by_name = {s["name"]: s for s in seg["segments"]}
    liver = by_name["liver"]
    assert liver["labelValue"] == 6 and liver["layer"] == 0
    assert np.allclose(liver["color"], np.array(labels[5]["color"]) / 255)
    assert liver["terminology"]["category"] == ["SCT", "123037004", "Anatomical Structure"]
    assert liver["terminology"]["type"] == ["SCT", "10200004", "Liver"]
    assert by_name["spleen"]["terminology"]["type"] == ["SCT", "91723000", "Anatomical Structure"]
    assert by_name["esophagus"]["extent"] == [0, -1, 0, -1, 0, -1]  # absent organ, still listed
    # Voxels: exactly the label map, indexed (i, j, k); geometry: voxel -> LPS as ITK maps it.
    np.testing.assert_array_equal(seg["voxels"], sitk.GetArrayFromImage(label_map).transpose(2, 1, 0))
    ijk = (10, 20, 30)
    lps = seg["ijkToLPS"] @ [*ijk, 1]
    np.testing.assert_allclose(lps[:3], label_map.TransformIndexToPhysicalPoint(ijk), atol=1e-4)
    mask = slicerio.segment_mask(seg, liver)
    assert int(mask.sum()) == int((sitk.GetArrayViewFromImage(label_map) == 6).sum())


def _check_dicom_seg(path, folder, label_map, labels):
    """What a PACS relies on, read with pydicom and highdicom: segments, frames, references, geometry."""
    import highdicom as hd

    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    sources = {}
    for f in folder.iterdir():
        src = pydicom.dcmread(f, stop_before_pixels=True)
        uid = src.SOPInstanceUID or src.file_meta.MediaStorageSOPInstanceUID
        sources[uid] = src
    assert ds.FrameOfReferenceUID == next(iter(sources.values())).FrameOfReferenceUID
    referenced = {
        item.ReferencedSOPInstanceUID for item in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == set(sources)
    array = sitk.GetArrayFromImage(label_map)
    present = [label for label in labels if (array == label["value"]).any()]
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [label["name"] for label in present]
    # One frame per (organ, slice) with that organ: the empty ones are left out.
    assert int(ds.NumberOfFrames) == sum(
        int((array == lab["value"]).any(axis=(1, 2)).sum()) for lab in present
    )
    # Every frame lies exactly on its source image: same position, orientation and pixel spacing.
    shared = ds.SharedFunctionalGroupsSequence[0]
    for frame in ds.PerFrameFunctionalGroupsSequence:
        source_uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        src = sources[source_uid]
        np.testing.assert_allclose(
            [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
            [float(v) for v in src.ImagePositionPatient],
            atol=1e-3,
        )
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose(
        [float(v) for v in orientation], [float(v) for v in src.ImageOrientationPatient]
    )
    np.testing.assert_allclose(
        [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing], [float(v) for v in src.PixelSpacing]
    )
    # highdicom reads it back; each source slice's masks are exactly the label map's slice.
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == len(present)
    assert seg.get_segment_description(1).segmented_property_category.value == "123037004"
    uids = [
        next(u for u, s in sources.items() if abs(float(s.ImagePositionPatient[2]) - z) < 1e-3)
        for z in label_map_slice_positions(label_map)
    ]
    pixels = seg.get_pixels_by_source_instance(uids)  # (slice, rows, columns, segment)
    for number, label in enumerate(present, start=1):
        np.testing.assert_array_equal(pixels[..., number - 1] > 0, array == label["value"])
    return ds


def label_map_slice_positions(image):
    return [image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(image.GetSize()[2])]


def test_dicom_seg_of_the_three_slice_ct(data_dir, tmp_path):
    folder = data_dir / "ct_3slice" / "dicom"
    label_map = read_image(data_dir / "ct_3slice" / "liver_spine_seg.nrrd", allow_constant=True)
    result = write_dicom_seg(label_map, folder, LIVER_SPINE, tmp_path / "seg.dcm", algorithm_version="1.2")
    assert [s["name"] for s in result.segments] == ["liver", "spine"] and result.notes == []
    ds = _check_dicom_seg(result.path, folder, label_map, LIVER_SPINE)
    first = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.PatientID == first.PatientID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert ds.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "91723000"
    with pytest.raises(FileExistsError, match=r"seg\.dcm"):
        write_dicom_seg(label_map, folder, LIVER_SPINE, result.path)


@pytest.mark.slow  # 31 organs, 520 frames: about 10 s of DICOM encoding and decoding
def test_dicom_seg_of_an_anonymised_series_from_an_array(data_dir, tmp_path):
    folder = data_dir / "ct_abdomen" / "dicom"
    labels = parse_labels(json.loads((data_dir / "ct_abdomen" / "labels_total.json").read_text()))
    label_map = read_image(data_dir / "ct_abdomen" / "dicom_labels_total.nii.gz", allow_constant=True)
    # The series blanked its SOP, study and series UIDs: references come from the file meta, and it says so.
    result = write_dicom_seg(sitk.GetArrayFromImage(label_map), folder, labels, tmp_path / "seg.dcm")
    assert any("file meta" in note for note in result.notes)
    assert any("StudyInstanceUID" in note for note in result.notes)
    _check_dicom_seg(result.path, folder, label_map, labels)


def test_dicom_seg_refuses_a_label_map_off_the_series_grid(data_dir, tmp_path):
    folder = data_dir / "ct_3slice" / "dicom"
    label_map = read_image(data_dir / "ct_3slice" / "liver_spine_seg.nrrd", allow_constant=True)
    shifted = sitk.Image(label_map)
    shifted.SetOrigin([o + d for o, d in zip(label_map.GetOrigin(), (0, 0, 0.5))])
    with pytest.raises(DicomSegError, match="not one slice"):
        write_dicom_seg(shifted, folder, LIVER_SPINE, tmp_path / "a.dcm")
    with pytest.raises(DicomSegError, match="does not define"):
        write_dicom_seg(label_map, folder, LIVER_SPINE[:1], tmp_path / "b.dcm")
    with pytest.raises(DicomSegError, match="empty"):
        write_dicom_seg(label_map * 0, folder, LIVER_SPINE, tmp_path / "c.dcm")
    assert not list(tmp_path.iterdir())


def test_preview_is_radiological_with_true_aspect(btcv, tmp_path):
    from PIL import Image

    ct_path, labels_path, labels = btcv
    image, label_map = read_image(ct_path), read_image(labels_path, allow_constant=True)
    array, _ = _lps(label_map)
    # LPS array: column index grows towards the patient's left, so the liver (patient right) has small
    # x and shows on the image's left in the axial and coronal panels, as radiologists view it.
    liver_x = np.argwhere(array == 6)[:, 2].mean()
    spleen_x = np.argwhere(array == 1)[:, 2].mean()
    assert liver_x < array.shape[2] / 2 < spleen_x
    path = save_preview(tmp_path / "p.png", image, label_map, labels, window=(-175, 250), dpi=50)
    with Image.open(path) as png:
        assert png.size == (600, 260)
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3).astype(int)
    # The spleen's card colour, blended over grey, appears: the overlay is drawn in the card's colours.
    spleen = np.array(labels[0]["color"])
    assert (np.abs(pixels - spleen).sum(axis=1) < 40).sum() > 0 or _blended_present(pixels, spleen)


def _blended_present(pixels, colour):
    grey = pixels.mean(axis=1, keepdims=True)
    expected = 0.55 * grey + 0.45 * colour
    return int((np.abs(pixels - expected).sum(axis=1) < 12).sum()) > 50
