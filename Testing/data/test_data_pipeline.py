"""Data pipeline on the real sample CT: MONAI transforms, seeded crops, bad-file handling, splits."""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from mambamim.data.dataset import EpochSampler, NoReadableScansError, VolumeDataset
from mambamim.data.intensity import CT_WINDOW
from mambamim.data.sources import find_scans, kfold_split, load_label_table, scan_list
from mambamim.data.transforms import finetune_transforms, pretrain_transforms

SPACING = (3.0, 3.0, 3.0)  # the scan's own spacing: keeps resampling cheap in tests


@pytest.fixture(scope="module")
def ct_pair(data_dir):
    folder = data_dir / "ct_abdomen"
    return {"image": str(folder / "ct.nii.gz"), "label": str(folder / "ct_labels_btcv13.nii.gz")}


def test_pretrain_crops_shapes_range_and_seeding(ct_pair):
    deterministic, random = pretrain_transforms((32, 32, 32), 3, SPACING, CT_WINDOW)
    dataset = VolumeDataset([{"image": ct_pair["image"]}], deterministic, random, seed=7)
    crops = dataset[(0, 0)]
    assert len(crops) == 3
    for crop in crops:
        image = crop["image"]
        assert type(image) is torch.Tensor and image.shape == (1, 32, 32, 32) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    # The CT window maps soft tissue inside the body crop to (0, 1): not all air, not all bone.
    assert 0.05 < float(torch.stack([c["image"] for c in crops]).mean()) < 0.95
    again = dataset[(0, 0)]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(crops, again)), "not seeded"
    other_epoch = dataset[(1, 0)]
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(crops, other_epoch))


def test_finetune_crops_are_balanced_and_keep_label_values(ct_pair):
    deterministic, random = finetune_transforms((32, 32, 32), 4, SPACING, CT_WINDOW)
    dataset = VolumeDataset([ct_pair], deterministic, random, seed=0)
    crops = dataset[(0, 0)]
    assert len(crops) == 4
    reference = set(np.unique(np.asarray(nib.load(ct_pair["label"]).dataobj)).tolist())
    foreground = []
    for crop in crops:
        assert crop["image"].shape == crop["label"].shape == (1, 32, 32, 32)
        assert set(torch.unique(crop["label"]).long().tolist()) <= reference  # nearest: no blended labels
        foreground.append(bool((crop["label"] > 0).any()))
    assert any(foreground), "pos/neg 1:1 sampling produced no crop with an organ"


def test_unreadable_file_is_reported_and_skipped(tmp_path, ct_pair):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"this is not a NIfTI file")
    messages: list[str] = []
    deterministic, random = pretrain_transforms((32, 32, 32), 1, SPACING, CT_WINDOW)
    items = [{"image": str(broken)}, {"image": ct_pair["image"]}]
    dataset = VolumeDataset(items, deterministic, random, report=messages.append)
    assert len(dataset) == 1 and dataset.items[0]["image"] == ct_pair["image"]
    assert len(messages) == 1 and str(broken) in messages[0]
    # Without the cache the bad volume is skipped at load time instead.
    lazy = VolumeDataset(items, deterministic, random, cache=False, report=messages.append)
    assert lazy[(0, 0)][0]["image"].shape == (1, 32, 32, 32)
    assert str(broken) in messages[-1]


def test_no_readable_scans_and_2d_image_are_clear_errors(tmp_path):
    flat = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(64, dtype=np.int16).reshape(8, 8), np.eye(4)), flat)
    junk = tmp_path / "junk.nrrd"
    junk.write_text("garbage")
    deterministic, random = pretrain_transforms((32, 32, 32), 1, SPACING, CT_WINDOW)
    with pytest.raises(NoReadableScansError) as info:
        VolumeDataset(scan_list(tmp_path), deterministic, random, report=lambda m: None)
    message = str(info.value)
    assert str(flat) in message and str(junk) in message and "3-D" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no scans found"):
        scan_list(empty)


def test_volume_smaller_than_crop_is_padded(tmp_path, ct_pair):
    ct = nib.load(ct_pair["image"])
    small = np.asarray(ct.dataobj)[40:60, 40:60, 50:62]  # 20 x 20 x 12 voxels of body at 3 mm
    path = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(small, ct.affine), path)
    deterministic, random = pretrain_transforms((32, 32, 32), 2, SPACING, CT_WINDOW)
    crops = VolumeDataset([{"image": str(path)}], deterministic, random)[(0, 0)]
    assert [c["image"].shape for c in crops] == [(1, 32, 32, 32)] * 2
    assert float(crops[0]["image"].min()) == 0.0  # padding = the window floor (air)


def test_find_scans_files_and_dicom_series(tmp_path, data_dir):
    shutil.copy(data_dir / "ct_abdomen" / "labels_btcv13.json", tmp_path / "notes.json")  # ignored
    os.symlink(data_dir / "ct_abdomen" / "ct.nii.gz", tmp_path / "a.nii.gz")
    os.symlink(data_dir / "ct_abdomen" / "dicom", tmp_path / "series")
    found = find_scans(tmp_path)
    assert [p.name for p in found] == ["a.nii.gz", "series"]


def test_kfold_split_and_label_table(data_dir, tmp_path):
    items = [{"image": f"case{i}"} for i in range(11)]
    folds = [kfold_split(items, 5, k, seed=0) for k in range(5)]
    assert folds == [kfold_split(items, 5, k, seed=0) for k in range(5)]  # fixed seed
    validation = [it["image"] for _, val in folds for it in val]
    assert sorted(validation) == sorted(it["image"] for it in items)  # every case validates exactly once
    for train, val in folds:
        assert not {it["image"] for it in train} & {it["image"] for it in val}
    with pytest.raises(ValueError, match="--fold"):
        kfold_split(items, 5, 5)
    table = load_label_table(data_dir / "ct_abdomen" / "labels_btcv13.json")
    assert [e["value"] for e in table] == list(range(1, 14)) and table[0]["name"] == "spleen"
    bad = tmp_path / "dataset.json"
    bad.write_text(json.dumps({"labels": {"one": "spleen"}}))
    with pytest.raises(ValueError, match=str(bad)):
        load_label_table(bad)
    with pytest.raises(ValueError, match="cannot read label names"):
        load_label_table(tmp_path / "missing.json")


def test_epoch_sampler_shards_and_resumes():
    shards = [list(EpochSampler(10, rank, 3, seed=1)) for rank in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded to 12 like DistributedSampler
    assert {i for s in shards for _, i in s} == set(range(10))
    sampler = EpochSampler(10, 0, 1, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(3)
    assert list(sampler) != full


def test_training_arrays_match_inference_model_space(sample_ct):
    """Training (MONAI) and ``mambamim segment`` (SimpleITK) put the same voxel at the same index."""
    from mambamim.data.imageio import read_image
    from mambamim.data.transforms import ApplyIntensitySpecd, LoadScand
    from mambamim.infer.preprocess import to_model_space
    from monai.transforms import Compose, Orientationd, Spacingd

    axes = (("L", "R"), ("P", "A"), ("I", "S"))
    training = Compose(
        [LoadScand("image"), Orientationd("image", "RAS", labels=axes), Spacingd("image", SPACING),
         ApplyIntensitySpecd("image", CT_WINDOW)]
    )({"image": str(sample_ct)})["image"][0]  # fmt: skip
    inference, _ = to_model_space(read_image(sample_ct), SPACING, CT_WINDOW)
    assert tuple(training.shape) == inference.shape
    assert np.allclose(training.numpy(), inference, atol=1e-4)
