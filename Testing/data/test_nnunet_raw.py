"""nnU-Net v2 raw datasets read directly, label tables either way round, label values checked before
training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from mambamim.data.label_checks import LabelValueError, check_label_values
from mambamim.data.nnunet_raw import (
    NnUNetDatasetError,
    find_nnunet_dataset,
    nnunet_training_items,
    read_nnunet_dataset,
)
from mambamim.data.sources import load_label_table, paired_folders, scan_list
from mambamim.engine.finetune import dataset_split, label_table, make_config
from tiny_nnunet import OFFSETS, make_tiny_nnunet_dataset, nnunet_labels


@pytest.fixture
def raw_root(tmp_path, data_dir, monkeypatch):
    root = tmp_path / "nnUNet_raw"
    make_tiny_nnunet_dataset(root, data_dir)
    monkeypatch.setenv("nnUNet_raw", str(root))
    return root


@pytest.fixture
def dataset(raw_root):
    return raw_root / "Dataset042_TinyAbdomen"


def _edit_json(folder, **changes):
    path = folder / "dataset.json"
    content = json.loads(path.read_text())
    content.update(changes)
    path.write_text(json.dumps(content))


@pytest.mark.parametrize("name", ["42", "042", "Dataset042", "Dataset042_TinyAbdomen"])
def test_dataset_found_by_id_or_name_under_nnunet_raw(raw_root, dataset, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # names, not paths: nothing called "42" here
    assert find_nnunet_dataset(name) == dataset
    assert find_nnunet_dataset(dataset) == dataset  # a path
    assert find_nnunet_dataset(dataset / "dataset.json") == dataset


def test_pretraining_reads_training_and_test_images(dataset, data_dir):
    (dataset / "imagesTs").mkdir()
    (dataset / "imagesTs" / "mr_000_0000.nii.gz").symlink_to(data_dir / "ct_abdomen" / "mr.nii.gz")
    images = [item["image"].rsplit("/", 2)[1:] for item in scan_list("Dataset042_TinyAbdomen")]
    assert images == [["imagesTr", f"abd_{i:03d}_0000.nii.gz"] for i in range(5)] + [
        ["imagesTs", "mr_000_0000.nii.gz"]
    ]


def test_unknown_id_is_a_clear_error(raw_root):
    with pytest.raises(NnUNetDatasetError, match=r"no nnU-Net dataset '7' under \$nnUNet_raw"):
        find_nnunet_dataset("7")


def test_training_pairs_and_label_table_the_nnunet_way_round(dataset, data_dir):
    config = make_config("tiny", data="Dataset042_TinyAbdomen")
    train, val, how = dataset_split(config)
    assert len(train) == 4 and len(val) == 1 and "fold 0 of a 5-fold" in how
    pairs = sorted(train + val, key=lambda item: item["image"])
    assert [p["image"].rsplit("/", 1)[1] for p in pairs] == [
        f"abd_{i:03d}_0000.nii.gz" for i in range(len(OFFSETS))
    ]
    assert all(p["label"].endswith(f"labelsTr/abd_{i:03d}.nii.gz") for i, p in enumerate(pairs))
    table = label_table(config)  # 'background': 0 is accepted, not rejected
    expected = {v: n for n, v in nnunet_labels(data_dir).items() if v}
    assert {e["value"]: e["name"] for e in table} == expected
    assert read_nnunet_dataset(dataset).modality == "CT"


def test_msd_labels_and_nnunet_labels_give_the_same_table(dataset, data_dir):
    msd = load_label_table(data_dir / "ct_abdomen" / "labels_btcv13.json")
    assert load_label_table(dataset / "dataset.json") == msd


def test_region_based_and_multichannel_datasets_refused(dataset):
    labels = json.loads((dataset / "dataset.json").read_text())["labels"]
    _edit_json(dataset, labels={**labels, "whole_kidney": [2, 3]})
    with pytest.raises(NnUNetDatasetError, match=r"region-based labels \(whole_kidney\) are not supported"):
        read_nnunet_dataset(dataset)
    with pytest.raises(ValueError, match="region-based"):
        load_label_table(dataset / "dataset.json")
    _edit_json(dataset, labels=labels, channel_names={"0": "T2", "1": "ADC"})
    with pytest.raises(NnUNetDatasetError, match=r"2 input channels \(T2, ADC\).*not supported"):
        read_nnunet_dataset(dataset)


def test_missing_files_and_wrong_counts_named(dataset):
    info = read_nnunet_dataset(dataset)
    (dataset / "labelsTr" / "abd_002.nii.gz").unlink()
    with pytest.raises(NnUNetDatasetError, match=r"no label map .*labelsTr/abd_002\.nii\.gz for image"):
        nnunet_training_items(info)
    shutil.copy(dataset / "labelsTr" / "abd_001.nii.gz", dataset / "labelsTr" / "abd_002.nii.gz")
    _edit_json(dataset, numTraining=7)
    with pytest.raises(NnUNetDatasetError, match="numTraining is 7 but imagesTr holds 5"):
        nnunet_training_items(read_nnunet_dataset(dataset))
    (dataset / "imagesTr" / "abd_000_0000.nii.gz").rename(dataset / "imagesTr" / "abd_000.nii.gz")
    with pytest.raises(NnUNetDatasetError, match=r"abd_000\.nii\.gz does not end in _0000\.nii\.gz"):
        nnunet_training_items(info)


def test_paired_folders_keep_working_and_a_folder_is_not_its_own_labels(dataset):
    pairs = paired_folders(dataset / "imagesTr", dataset / "labelsTr")  # _0000 images pair with labels
    assert len(pairs) == len(OFFSETS) and pairs[0]["label"].endswith("abd_000.nii.gz")
    with pytest.raises(ValueError, match="is the image folder itself"):
        paired_folders(dataset / "imagesTr", dataset / "imagesTr")
    with pytest.raises(ValueError, match="is the image folder itself"):
        paired_folders(dataset / "imagesTr", dataset / "imagesTr" / ".." / "imagesTr")


def _write_bad_label(dataset, value):
    import nibabel as nib

    path = dataset / "labelsTr" / "abd_003.nii.gz"
    image = nib.load(path)
    voxels = np.asarray(image.dataobj).copy()
    voxels[0, 0, :3] = value
    nib.save(nib.Nifti1Image(voxels, image.affine, image.header), path)
    return path


def test_label_value_outside_the_table_names_file_and_value(dataset):
    path = _write_bad_label(dataset, 15)
    config = make_config("tiny", data=str(dataset))
    train, val, _ = dataset_split(config)
    with pytest.raises(LabelValueError, match=rf"{path}.*value\(s\) 15 outside the label table"):
        check_label_values(train + val, label_table(config))
    items = [item for item in train + val if "abd_003" not in item["label"]]
    check_label_values(items, label_table(config))  # the real labels fit their table


def test_finetune_command_refuses_bad_labels_before_training(dataset, tmp_path, capsys):
    from mambamim.cli import main

    path = _write_bad_label(dataset, 15)
    out = tmp_path / "run"
    code = main(["finetune", "Dataset042_TinyAbdomen", "-o", str(out), "--preset", "tiny", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"label map {path} holds value(s) 15 outside the label table" in err
    assert "out of bounds" not in err and not (out / "last.pt").exists()


def test_label_map_given_as_its_own_image_refused(dataset, data_dir):
    image = str(dataset / "imagesTr" / "abd_000_0000.nii.gz")
    with pytest.raises(LabelValueError, match="is the image itself"):
        check_label_values([{"image": image, "label": image}], load_label_table(dataset / "dataset.json"))
