"""`segment`: probabilities resampled onto the input grid, mirroring TTA, ensembles, saved probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from infer_helpers import make_threshold_package, run_segment
from mambamim.data.imageio import read_image
from mambamim.infer.package import load_package
from mambamim.infer.preprocess import from_model_space, to_model_space
from mambamim.infer.probabilities import default_probability_path, load_probabilities
from mambamim.infer.segment import segment_file, segment_image
from mambamim.infer.tta import MirroredNetwork, mirror_combinations, use_tta
from torch import nn

# --- test-time augmentation -------------------------------------------------------------------------


def test_mirror_combinations_are_nnunets_eight_passes():
    combos = mirror_combinations()
    assert len(combos) == 8 and combos[0] == () and len(set(combos)) == 8
    assert use_tta(None, "cpu") is False and use_tta(None, "cuda") is True
    assert use_tta(True, "cpu") is True and use_tta(False, "cuda") is False


def test_mirrored_network_averages_flipped_passes_of_an_asymmetric_network():
    torch.manual_seed(0)
    net = nn.Conv3d(1, 3, kernel_size=3, padding=1).eval()  # random kernel: not mirror-symmetric
    x = torch.rand(2, 1, 8, 10, 12)
    expected = torch.zeros(2, 3, 8, 10, 12)
    for dims in [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]:
        expected += net(x.flip(dims)).flip(dims) if dims else net(x)
    with torch.no_grad():
        got = MirroredNetwork(net)(x)
        plain = net(x)
    torch.testing.assert_close(got, expected.detach() / 8)
    assert not torch.allclose(got, plain, atol=1e-4)  # the augmentation changes an asymmetric net's answer


def test_tta_leaves_a_voxelwise_network_unchanged_and_reports_passes(small_ct, threshold_pkg):
    image, package = read_image(small_ct), load_package(threshold_pkg)
    plain = segment_image(image, package, device="cpu", tta=False)
    mirrored = segment_image(image, package, device="cpu", tta=True)
    assert plain.tta_passes == 1 and mirrored.tta_passes == 8
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(plain.labels), sitk.GetArrayFromImage(mirrored.labels)
    )


# --- probabilities onto the input grid ---------------------------------------------------------------


def test_probabilities_not_labels_are_resampled_to_the_input_grid(sample_ct, threshold_pkg):
    """Model grid 6 mm, input 3 mm: the label map is the argmax of the softmax probabilities resampled
    linearly (class by class, with SimpleITK, here independently of the engine) onto the input grid,
    not the nearest-neighbour copy of the model-grid argmax that the engine wrote before."""
    image, package = read_image(sample_ct), load_package(threshold_pkg)
    result = segment_image(image, package, device="cpu", keep_probabilities=True)
    labels = sitk.GetArrayFromImage(result.labels)
    assert result.labels.GetSize() == image.GetSize() and result.labels.GetSpacing() == image.GetSpacing()
    assert (
        result.labels.GetOrigin() == image.GetOrigin()
        and result.labels.GetDirection() == image.GetDirection()
    )
    probabilities = result.probabilities
    assert probabilities.shape == (3, *labels.shape)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(probabilities.argmax(0), labels)

    spec = package.card.input
    array, ref = to_model_space(image, list(spec.spacing), dict(spec.intensity))
    padded = np.pad(array, [(0, -s % 16) for s in array.shape])  # ThresholdNet: voxel-wise, any padding
    with torch.no_grad():
        logits = package.model(torch.from_numpy(padded)[None, None])[0, :, : array.shape[0], : array.shape[1]]
    softmax = torch.softmax(logits[..., : array.shape[2]], 0).numpy()
    resampled = np.stack([sitk.GetArrayFromImage(from_model_space(p, ref, is_label=False)) for p in softmax])
    inside = resampled.sum(0) > 0.5  # the model grid rounds the extent: 0 outside it in SimpleITK
    assert inside.mean() > 0.98
    np.testing.assert_allclose(probabilities[:, inside], resampled[:, inside], atol=1e-5)
    assert (probabilities[0, ~inside] == 1).all()  # outside the model grid: background, as before
    nearest = sitk.GetArrayFromImage(from_model_space(softmax.argmax(0), ref, is_label=True))
    assert (nearest != labels).sum() > 100  # the paths differ at organ borders
    assert (nearest == labels).mean() > 0.9


# --- ensembles and saved probabilities ---------------------------------------------------------------


def test_ensemble_of_identical_packages_equals_one_and_saved_file_reproduces_it(
    small_ct, threshold_pkg, tmp_path
):
    single = segment_file(
        small_ct, tmp_path / "one.nii.gz", threshold_pkg, device="cpu", save_probabilities=True
    )
    assert single.probability_file == default_probability_path(tmp_path / "one.nii.gz")
    assert single.probability_file.name == "one.probabilities.npz"
    saved = load_probabilities(single.probability_file)
    assert saved.probabilities.dtype == np.float16 and saved.members == [
        str(load_package(threshold_pkg).path)
    ]
    assert [label["name"] for label in saved.labels] == ["body", "bone"]
    assert saved.grid.GetSize() == read_image(small_ct).GetSize()

    pair = segment_file(small_ct, tmp_path / "two.nii.gz", [threshold_pkg, threshold_pkg], device="cpu")
    assert len(pair.members) == 2
    from_file = segment_file(small_ct, tmp_path / "file.nii.gz", [single.probability_file], device="cpu")
    mixed = segment_file(
        small_ct, tmp_path / "mixed.nii.gz", [threshold_pkg, single.probability_file], device="cpu"
    )
    reference = sitk.GetArrayFromImage(single.labels)
    for other in (pair, mixed):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(other.labels), reference)
    # From the float16 file alone: identical except where two classes tie within float16 precision.
    assert (sitk.GetArrayFromImage(from_file.labels) == reference).mean() > 0.999


def test_ensemble_refuses_differing_label_tables_naming_both(small_ct, threshold_pkg, tmp_path):
    other = tmp_path / "other"
    make_threshold_package(other, spacing=(6.0, 6.0, 6.0))
    card = json.loads((other / "model.json").read_text())
    card["labels"][1]["name"] = "bone_marrow"
    (other / "model.json").write_text(json.dumps(card))
    out = tmp_path / "labels.nii.gz"
    with pytest.raises(ValueError, match="label tables differ") as err:
        segment_file(small_ct, out, [threshold_pkg, other], device="cpu")
    assert (
        str(threshold_pkg) in str(err.value)
        and str(other) in str(err.value)
        and "bone_marrow" in str(err.value)
    )
    assert not out.exists()


def test_probability_file_of_another_grid_is_refused(small_ct, sample_ct, threshold_pkg, tmp_path):
    first = segment_file(
        small_ct, tmp_path / "a.nii.gz", threshold_pkg, device="cpu", save_probabilities=True
    )
    with pytest.raises(ValueError, match="another grid"):
        segment_file(sample_ct, tmp_path / "b.nii.gz", [threshold_pkg, first.probability_file], device="cpu")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="not a probability file"):
        segment_file(small_ct, tmp_path / "c.nii.gz", [broken], device="cpu")


def test_cli_ensemble_tta_and_save_probabilities(small_ct, threshold_pkg, tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    npz = tmp_path / "probs.npz"
    argv = ["--input", str(small_ct), "--output", str(out), "--model", str(threshold_pkg), "--model",
            str(threshold_pkg), "--device", "cpu", "--tta", "--save-probabilities", str(npz),
            "--progress", "json"]  # fmt: skip
    assert run_segment(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["stage"] == "done" and lines[-1]["outputs"] == {
        "labels": str(out),
        "probabilities": str(npz),
        "seg_nrrd": str(tmp_path / "seg.seg.nrrd"),  # the default companion of a label map
    }
    assert (tmp_path / "seg.seg.nrrd").is_file()
    assert any("[model 2/2]" in line["message"] for line in lines)
    assert any("mirroring TTA x8" in line["message"] for line in lines)
    saved = load_probabilities(npz)
    np.testing.assert_array_equal(
        saved.probabilities.astype(np.float32).argmax(0),
        sitk.GetArrayFromImage(read_image(out, allow_constant=True)),
    )
    # An existing probability file is refused before any work, like the label map.
    out.unlink()
    assert run_segment([*argv[:-2], "--progress", "none"]) == 1
    assert "probs.npz already exists" in capsys.readouterr().err and not out.exists()


def test_batch_mode_saves_one_probability_file_per_case(small_ct, threshold_pkg, tmp_path):
    out = tmp_path / "segs"
    argv = ["--input", str(small_ct.parent), "--output", str(out), "--model", str(threshold_pkg),
            "--device", "cpu", "--save-probabilities", "--progress", "none"]  # fmt: skip
    assert run_segment(argv) == 0
    assert (out / "ct_seg.nii.gz").exists() and (out / "ct_seg.probabilities.npz").exists()
    assert (
        run_segment([*argv[:-3], "--save-probabilities", "x.npz", "--overwrite", "--progress", "none"]) == 1
    )


def test_probability_file_alone_writes_the_seg_nrrd_with_its_labels(small_ct, threshold_pkg, tmp_path):
    """No package to take the card from: the .seg.nrrd and statistics use the file's label table."""
    import slicerio

    npz = tmp_path / "probs.npz"
    first = ["--input", str(small_ct), "--output", str(tmp_path / "a.nii.gz"), "--model", str(threshold_pkg),
             "--device", "cpu", "--save-probabilities", str(npz), "--progress", "none"]  # fmt: skip
    assert run_segment(first) == 0
    out = tmp_path / "b.nii.gz"
    argv = ["--input", str(small_ct), "--output", str(out), "--model", str(npz), "--statistics",
            "--progress", "none"]  # fmt: skip
    assert run_segment(argv) == 0
    labels = sitk.GetArrayFromImage(read_image(out, allow_constant=True))
    seg = slicerio.read_segmentation(str(tmp_path / "b.seg.nrrd"))
    names = [label["name"] for label in load_probabilities(npz).labels]
    assert [s["name"] for s in seg["segments"]] == names
    np.testing.assert_array_equal(seg["voxels"], labels.transpose(2, 1, 0))
    stats = json.loads((tmp_path / "b_statistics.json").read_text())
    assert stats[names[0]]["voxels"] == int((labels == 1).sum())
