"""Reading NIfTI / NRRD / MGH / DICOM into SimpleITK with correct LPS geometry; refusing bad volumes."""

from __future__ import annotations

import logging
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from mambamim.data.imageio import ImageReadError, read_image, write_image


def test_mgz_geometry_matches_nibabel(data_dir):
    path = data_dir / "brain_mgz" / "norm.mgz"
    image = read_image(path)
    reference = nib.load(str(path))
    assert image.GetSize() == reference.shape
    # Every voxel index maps to the same physical point (nibabel RAS -> ITK LPS flips x and y).
    for index in [(0, 0, 0), (255, 0, 0), (10, 200, 33), (255, 255, 255)]:
        ras = reference.affine @ np.array([*index, 1.0])
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-3)
    data = np.asarray(reference.dataobj)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image)[30, 100, 200], data[200, 100, 30])


def test_three_slice_dicom_rescaled(data_dir):
    folder = data_dir / "ct_3slice" / "dicom"
    image = read_image(folder)
    assert image.GetSize() == (512, 512, 3)
    np.testing.assert_allclose(image.GetSpacing(), (0.810547, 0.810547, 1.0), atol=1e-5)
    # Hounsfield units: stored value * RescaleSlope + RescaleIntercept, slices sorted by position.
    slices = sorted(
        (pydicom.dcmread(p) for p in folder.iterdir()), key=lambda d: float(d.ImagePositionPatient[2])
    )
    first = slices[0]
    expected = first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image)[0], expected)
    np.testing.assert_allclose(image.GetOrigin(), [float(v) for v in first.ImagePositionPatient], atol=1e-4)


def test_dicom_series_geometry(data_dir):
    image = read_image(data_dir / "ct_abdomen" / "dicom")
    assert image.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(image.GetSpacing(), (0.9765625, 0.9765625, 2.0))
    labels = read_image(data_dir / "ct_abdomen" / "dicom_labels_total.nii.gz", allow_constant=True)
    np.testing.assert_allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-3)


def test_folder_with_two_series_reads_the_largest_and_says_so(data_dir, tmp_path, caplog):
    for path in sorted((data_dir / "ct_abdomen" / "dicom").iterdir())[:5]:
        shutil.copy(path, tmp_path / path.name)
    for path in (data_dir / "ct_3slice" / "dicom").iterdir():
        shutil.copy(path, tmp_path / f"small_{path.name}")
    with caplog.at_level(logging.WARNING):
        image = read_image(tmp_path)
    assert image.GetSize() == (512, 512, 5)
    assert "2 DICOM series" in caplog.text and "largest" in caplog.text


def test_dicom_series_with_a_missing_slice_is_refused(data_dir, tmp_path):
    files = sorted((data_dir / "ct_abdomen" / "dicom").iterdir())
    for path in files[:4] + files[5:8]:
        shutil.copy(path, tmp_path / path.name)
    with pytest.raises(ImageReadError, match="uneven slice spacing"):
        read_image(tmp_path)


def _write(array: np.ndarray, path, spacing=None):
    image = sitk.GetImageFromArray(array, isVector=False)
    if spacing:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: _write(np.random.default_rng(0).random((32, 32)).astype(np.float32), d / "slice.nrrd"),
            "2-D image",
        ),
        (
            lambda d: _write(np.random.default_rng(0).random((1, 32, 32)).astype(np.float32), d / "one.nrrd"),
            "single slice",
        ),
        (lambda d: _write(np.full((8, 8, 8), 7, np.int16), d / "flat.nii.gz"), "constant"),
        (lambda d: _write(np.where(np.eye(8)[None] > 0, np.nan, 1.0).repeat(8, 0), d / "nan.nrrd"), "NaN"),
    ],
)
def test_bad_volumes_are_refused_with_the_file_name(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_4d_nifti_is_refused(tmp_path):
    path = tmp_path / "dyn.nii.gz"
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8, 3)).astype(np.float32), np.eye(4)),
        str(path),
    )
    with pytest.raises(ImageReadError, match=r"4-D|values per voxel") as info:
        read_image(path)
    assert "dyn.nii.gz" in str(info.value)


def test_unreadable_and_missing_files(tmp_path):
    garbage = tmp_path / "scan.nii.gz"
    garbage.write_bytes(b"this is not a NIfTI file")
    with pytest.raises(ImageReadError, match="cannot read") as info:
        read_image(garbage)
    assert "scan.nii.gz" in str(info.value)
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "missing.nrrd")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no DICOM series"):
        read_image(tmp_path / "empty")


def test_constant_label_map_allowed_when_asked(tmp_path):
    path = _write(np.zeros((4, 4, 4), np.uint8), tmp_path / "empty_labels.nrrd")
    assert read_image(path, allow_constant=True).GetSize() == (4, 4, 4)


def test_write_is_atomic_and_refuses_existing(tmp_path):
    image = sitk.GetImageFromArray(np.arange(64, dtype=np.int16).reshape(4, 4, 4))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    out = write_image(image, tmp_path / "sub" / "a.nrrd")
    assert read_image(out).GetDirection() == image.GetDirection()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private 0600
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_image(image, out)
    write_image(image, out, overwrite=True)
    with pytest.raises(ValueError, match="unsupported format"):
        write_image(image, tmp_path / "a.png")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.nrrd"]  # no temporary left behind
