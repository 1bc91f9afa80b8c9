"""A tiny nnU-Net v2 raw dataset built from the sample CT: cropped copies of the real scan and its
BTCV labels (real voxels, real headers), with dataset.json exactly as nnU-Net v2 writes it."""

from __future__ import annotations

import json
from pathlib import Path

# Five overlapping 48-voxel crops (3 mm) of the 122x101x112 abdomen CT: each holds several organs.
CROP = 48
OFFSETS = [(20, 20, 30), (40, 20, 30), (30, 40, 40), (50, 45, 50), (35, 30, 60)]


def nnunet_labels(data_dir: Path) -> dict[str, int]:
    """labels_btcv13.json (value -> name) the nnU-Net way round: name -> value, background 0."""
    table = json.loads((data_dir / "ct_abdomen" / "labels_btcv13.json").read_text())
    return {name: int(value) for value, name in table.items()}


def make_tiny_nnunet_dataset(root: Path, data_dir: Path, name: str = "Dataset042_TinyAbdomen") -> Path:
    import nibabel as nib

    folder = root / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    ct = nib.load(data_dir / "ct_abdomen" / "ct.nii.gz")
    labels = nib.load(data_dir / "ct_abdomen" / "ct_labels_btcv13.nii.gz")
    for index, (x, y, z) in enumerate(OFFSETS):
        window = (slice(x, x + CROP), slice(y, y + CROP), slice(z, z + CROP))
        nib.save(ct.slicer[window], folder / "imagesTr" / f"abd_{index:03d}_0000.nii.gz")
        nib.save(labels.slicer[window], folder / "labelsTr" / f"abd_{index:03d}.nii.gz")
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": nnunet_labels(data_dir),
        "numTraining": len(OFFSETS),
        "file_ending": ".nii.gz",
        "name": name,
        "licence": "Apache-2.0 (TotalSegmentator test data)",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder
