"""The label map comes back on exactly the input grid, with labels in place (DICOM/LPS/oblique/anisotropic).

The model is ``ThresholdNet`` (labels = intensity thresholds), so the correct answer on the input grid
is known: thresholding the input itself. Where the model grid coincides with the input grid (an
axis-aligned input at the card's spacing) the labels must match voxel for voxel; otherwise (oblique,
other spacing) they go through two resamplings and must still agree closely - a flipped, shifted or
mis-scaled result would not.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from infer_helpers import dice, expected_labels, make_threshold_package, register_threshold_model
from mambamim.data.imageio import read_image, write_image
from mambamim.infer.package import load_package
from mambamim.infer.preprocess import from_model_space, to_model_space
from mambamim.infer.segment import segment_file, segment_image


@pytest.fixture
def package_factory(tmp_path, monkeypatch):
    register_threshold_model(monkeypatch)

    def make(spacing):
        path = make_threshold_package(
            tmp_path / f"pkg_{'_'.join(f'{s:g}' for s in spacing)}", spacing=spacing
        )
        return load_package(path)

    return make


def assert_same_grid(out: sitk.Image, ref: sitk.Image) -> None:
    assert out.GetSize() == ref.GetSize()
    assert out.GetSpacing() == ref.GetSpacing()
    assert out.GetOrigin() == ref.GetOrigin()
    assert out.GetDirection() == ref.GetDirection()


def assert_labels_in_place(got: np.ndarray, want: np.ndarray, body: float, bone: float) -> None:
    """Close agreement after resampling, and clearly worse agreement for a result flipped on any axis."""
    assert dice(got, want, 1) > body
    assert dice(got, want, 2) > bone
    for axis in range(3):
        assert dice(np.flip(got, axis), want, 2) < dice(got, want, 2) - 0.2, (
            f"not sensitive to a flip of axis {axis}"
        )


def rotation(z_deg: float, x_deg: float) -> np.ndarray:
    z, x = np.deg2rad(z_deg), np.deg2rad(x_deg)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


@pytest.fixture(scope="module")
def dicom_small(data_dir):
    # Every 4th row/column keeps the series' LPS geometry (SimpleITK slicing updates spacing/origin).
    return read_image(data_dir / "ct_abdomen" / "dicom")[::4, ::4, :]


def test_dicom_series_exact_round_trip(dicom_small, package_factory):
    spacing = dicom_small.GetSpacing()  # (3.90625, 3.90625, 2.0), identity (LPS) direction
    result = segment_image(dicom_small, package_factory(spacing), device="cpu")
    assert_same_grid(result.labels, dicom_small)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.labels), expected_labels(dicom_small))


def test_dicom_series_resampled_in_place(dicom_small, package_factory):
    result = segment_image(dicom_small, package_factory((3.0, 3.0, 3.0)), device="cpu")
    assert_same_grid(result.labels, dicom_small)
    got, want = sitk.GetArrayFromImage(result.labels), expected_labels(dicom_small)
    # Contrast CT soft tissue is fragmented, so partial-volume changes cost Dice (measured 0.89);
    # a one-voxel shift or a left-right mirror drops it below 0.80: the check can fail.
    assert dice(got, want, 1) > 0.85
    assert dice(got[:, :, ::-1], want, 1) < dice(got, want, 1) - 0.05


def test_lps_nifti_written_and_read_back(sample_ct, package_factory, tmp_path):
    lps = sitk.DICOMOrient(read_image(sample_ct), "LPS")
    assert lps.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    lps_path = write_image(lps, tmp_path / "ct_lps.nii.gz")
    out_path = tmp_path / "labels.nrrd"
    segment_file(lps_path, out_path, package_factory((3.0, 3.0, 3.0)), device="cpu")
    image, labels = read_image(lps_path), read_image(out_path, allow_constant=True)
    assert labels.GetSize() == image.GetSize()
    np.testing.assert_allclose(labels.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(labels.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), expected_labels(image))


def test_oblique_direction(sample_ct, package_factory):
    image = read_image(sample_ct)[::2, ::2, ::2]
    oblique = sitk.Image(image)
    oblique.SetDirection(
        (rotation(25.0, 12.0) @ np.asarray(image.GetDirection()).reshape(3, 3)).ravel().tolist()
    )
    result = segment_image(oblique, package_factory((6.0, 6.0, 6.0)), device="cpu")
    assert_same_grid(result.labels, oblique)
    # Measured: body 0.97, bone 0.67 at 6 mm.
    assert_labels_in_place(sitk.GetArrayFromImage(result.labels), expected_labels(oblique), 0.94, 0.55)


@pytest.mark.parametrize("target", [(1.5, 2.5, 5.0), (3.0, 3.0, 3.0)])
def test_anisotropic_spacing(sample_ct, package_factory, target):
    image = read_image(sample_ct)[::2, ::2, ::2]
    aniso = sitk.Image(image)
    aniso.SetSpacing((1.5, 2.5, 5.0))
    result = segment_image(aniso, package_factory(target), device="cpu")
    assert_same_grid(result.labels, aniso)
    got, want = sitk.GetArrayFromImage(result.labels), expected_labels(aniso)
    if target == aniso.GetSpacing():
        np.testing.assert_array_equal(got, want)
    else:  # measured: body 0.96, bone 0.52 (x is downsampled 2x, z upsampled)
        assert_labels_in_place(got, want, 0.93, 0.42)


def test_to_model_space_matches_monai_ras_layout(sample_ct):
    """Model space is what MONAI training pipelines see: LoadImage + Orientation('RAS')."""
    from mambamim.data.intensity import CT_WINDOW, normalize_intensity
    from monai.transforms import EnsureChannelFirst, LoadImage, Orientation

    image = read_image(sample_ct)
    array, ref = to_model_space(sitk.DICOMOrient(image, "LPS"), image.GetSpacing(), CT_WINDOW)
    monai = Orientation("RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(
        EnsureChannelFirst()(LoadImage(image_only=True)(str(sample_ct)))
    )
    np.testing.assert_allclose(array, normalize_intensity(monai[0].numpy(), CT_WINDOW), atol=1e-6)
    back = from_model_space(array > 0.5, ref, is_label=True)
    assert back.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
