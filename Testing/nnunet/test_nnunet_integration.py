"""nnU-Net v2 integration (``mambamim.nnunet``) checked against nnU-Net itself.

The slow test makes a tiny nnU-Net dataset from crops of the real 3 mm sample CT and its labels, runs
nnU-Net's own command-line programs (plan and preprocess, train each of our trainers for one short epoch
on the CPU, predict), and converts a trained fold into our package, which ``mambamim segment`` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

nnunetv2 = pytest.importorskip("nnunetv2", reason="nnU-Net v2 not installed (pip install 'mambamim[nnunet]')")

from mambamim.data.intensity import normalize_intensity  # noqa: E402
from mambamim.nn import build_model  # noqa: E402
from mambamim.nnunet import trainers_path  # noqa: E402
from mambamim.nnunet.networks import (  # noqa: E402
    adapt_patch_size,
    check_patch_size,
    hymamba_config,
    taming_config_from_plan,
)

BIN = Path(sys.executable).parent
TINY_HYMAMBA = {"channels": (4, 4, 8, 8, 12), "blocks": (0, 1, 1, 1, 1), "mamba_depth": 1, "d_state": 4}
TRAINERS = ("HyMamba", "SegMamba", "BiSegMamba", "MultiSegMamba", "SegMambaSkip")

# Tiny variants, found by nnU-Net in a user folder listed in nnUNet_extTrainer next to ours: one epoch of
# one iteration, no mirroring (as nnU-Net's nnUNetTrainerNoMirroring); small networks (the Taming variants
# keep the plan's stages and strides, narrower).
TINY_TRAINERS = textwrap.dedent(
    """
    import torch
    from mambamim.nnunet import trainers


    def tiny(base, config):
        class Tiny(base):
            network_config = config

            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                self.num_epochs = 1
                self.num_iterations_per_epoch = 1
                self.num_val_iterations_per_epoch = 1

            def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
                configure = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size
                rotation, dummy_2d, initial_patch, _ = configure()
                self.inference_allowed_mirroring_axes = None  # validation without mirroring: 8x fewer passes
                return rotation, dummy_2d, initial_patch, None

            @classmethod
            def network_spec(cls, *args):
                spec = super().network_spec(*args)
                if "strides" in spec:  # Taming: the plan's depth at widths 4, 8, 8, ...
                    stages = len(spec["channels"])
                    spec.update(channels=[4] + [8] * (stages - 1), blocks_per_stage=[1] * stages,
                                decoder_blocks=[1] * (stages - 1))
                return spec

        Tiny.__name__ = Tiny.__qualname__ = base.__name__ + "Tiny"
        return Tiny


    TAMING = {"d_state": 4, "d_conv": 2, "expand": 1}
    nnUNetTrainerHyMambaTiny = tiny(trainers.nnUNetTrainerHyMamba, TINY_HYMAMBA)
    for name in ("SegMamba", "BiSegMamba", "MultiSegMamba", "SegMambaSkip"):
        globals()[f"nnUNetTrainer{name}Tiny"] = tiny(getattr(trainers, f"nnUNetTrainer{name}"), TAMING)
    """
).replace("TINY_HYMAMBA", repr(TINY_HYMAMBA))


# The CPU torch wheel here comes with PyPI's CUDA build of torchvision (pulled in by timm), whose ops library
# cannot load without CUDA torch; torchvision 0.28 then fails on import (its fake-kernel registrations of
# those ops are unguarded) and so does nnU-Net's trainer lookup, which imports all of nnU-Net's trainer
# modules, timm users included. Users install matching torch and torchvision builds; for the child
# processes of these tests, skipping the registrations of absent ops lets torchvision import without its
# ops (nothing here uses them). A no-op where torchvision's ops load.
TORCHVISION_SITECUSTOMIZE = textwrap.dedent(
    """
    import torch
    import torch.library

    _register_fake = torch.library.register_fake


    def _register_fake_if_present(op, *args, **kwargs):
        if isinstance(op, str) and op.startswith("torchvision::"):
            if not hasattr(torch.ops.torchvision, op.split("::")[1]):
                return lambda fn=None: fn
        return _register_fake(op, *args, **kwargs)


    torch.library.register_fake = _register_fake_if_present
    """
)


def test_patch_size_adapted_like_nnunet_planners_and_refused_naming_the_axis():
    assert adapt_patch_size([40, 64, 7]) == [48, 64, 16]
    check_patch_size([48, 64, 16], 16, "HyMamba")
    with pytest.raises(ValueError, match=r"40 on axis 0"):
        hymamba_config([40, 64, 64], 1, 3)
    with pytest.raises(ValueError, match=r"56 on axis 2"):
        check_patch_size([64, 64, 56], 16, "HyMamba")


def test_taming_plan_architecture_and_anisotropic_strides_refused_naming_stage_and_axis():
    plan = {
        "features_per_stage": [32, 64, 128],
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "kernel_sizes": [[3, 3, 3]] * 3,
        "n_conv_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2],
    }
    config = taming_config_from_plan(plan)
    assert config == {"channels": [32, 64, 128], "strides": [2, 2], "blocks_per_stage": [2, 2, 2],
                      "decoder_blocks": [2, 2], "kernel_size": 3}  # fmt: skip
    with pytest.raises(ValueError, match="stride of stage 2 is \\[1, 2, 2\\]: axis 1 differs"):
        taming_config_from_plan({**plan, "strides": [[1, 1, 1], [2, 2, 2], [1, 2, 2]]})


def test_permuted_axes_runs_the_network_on_nnunet_array_order():
    inner = build_model("hymamba", in_channels=1, out_channels=2, **TINY_HYMAMBA).eval()
    wrapped = build_model("permuted_axes", in_channels=1, out_channels=2, network="hymamba",
                          network_config=TINY_HYMAMBA, axes=[2, 0, 1]).eval()  # fmt: skip
    wrapped.network.load_state_dict(inner.state_dict())
    x = torch.randn(1, 1, 16, 32, 48)  # ours (x, y, z); the network's axis n is our axis axes[n]
    with torch.no_grad():
        expected = inner(x.permute(0, 1, 4, 2, 3)).permute(0, 1, 3, 4, 2)
        assert torch.equal(wrapped(x), expected)
    assert set(wrapped.state_dict()) == {f"network.{k}" for k in inner.state_dict()}


def test_clip_zscore_equals_nnunet_ct_normalization():
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization

    props = {"mean": 40.0, "std": 80.0, "percentile_00_5": -150.0, "percentile_99_5": 300.0}
    image = np.random.default_rng(0).uniform(-1000, 1000, (8, 9, 10)).astype(np.float32)
    theirs = CTNormalization(intensityproperties=props, target_dtype=np.float32).run(image.copy())
    spec = {"type": "clip_zscore", "lower": -150.0, "upper": 300.0, "mean": 40.0, "std": 80.0}
    np.testing.assert_allclose(normalize_intensity(image, spec), theirs, rtol=1e-6, atol=1e-6)


def _env(root: Path, ext: Path | None = None) -> dict[str, str]:
    site = root / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(TORCHVISION_SITECUSTOMIZE)
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p),
        nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(root / "results"), nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1",
        nnUNet_compile="false", OMP_NUM_THREADS="1",
        nnUNet_extTrainer=os.pathsep.join(str(p) for p in (trainers_path(), ext) if p is not None),
    )  # fmt: skip
    return env


def _run(args: list[str], env: dict[str, str], timeout: int = 600) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def test_nnunet_finds_our_trainers_through_the_documented_folder(tmp_path):
    printed = _run([sys.executable, "-m", "mambamim.nnunet", "path"], dict(os.environ)).strip()
    assert Path(printed) == trainers_path()
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
            f"for n in {TRAINERS!r}:\n    print('MODEL', find('nnUNetTrainer' + n).model_name)")  # fmt: skip
    out = _run([sys.executable, "-c", code], _env(tmp_path))
    found = [line.split()[1] for line in out.splitlines() if line.startswith("MODEL ")]
    assert found == ["hymamba", "segmamba", "bisegmamba", "multisegmamba", "segmambaskip"]
    env = _env(tmp_path)
    env.pop("nnUNet_extTrainer")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "nnUNet_extTrainer" in done.stderr


def test_package_from_nnunet_refuses_a_folder_that_is_not_an_nnunet_model(tmp_path, capsys):
    from mambamim.cli import main as cli_main

    (tmp_path / "model").mkdir()
    assert cli_main(["package", "--from-nnunet", str(tmp_path / "model"), "--out", str(tmp_path / "p")]) == 1
    assert "plans.json not found" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def _write_dataset(data_dir: Path, raw: Path) -> Path:
    """Dataset991: 40³ crops of the sample CT (3 mm) around the liver and the spleen, labels 1 liver 2 spleen;
    a third crop as the image to predict."""
    import nibabel as nib

    ct = nib.load(data_dir / "ct_abdomen" / "ct.nii.gz")
    btcv = nib.load(data_dir / "ct_abdomen" / "ct_labels_btcv13.nii.gz")
    source = np.asarray(btcv.dataobj)
    labels = np.zeros(source.shape, np.uint8)
    labels[source == 6] = 1  # liver
    labels[source == 1] = 2  # spleen
    folder = raw / "Dataset991_MambaTiny"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    size = 40

    def crop(center):
        start = [int(np.clip(c - size // 2, 0, s - size)) for c, s in zip(center, source.shape)]
        return tuple(slice(a, a + size) for a in start)

    boxes = [crop(np.argwhere(labels == v).mean(0)) for v in (1, 2)]
    for i, box in enumerate(boxes):
        nib.save(ct.slicer[box], folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        label = nib.Nifti1Image(labels[box], btcv.slicer[box].affine)
        nib.save(label, folder / "labelsTr" / f"case_{i:03d}.nii.gz")
    middle = crop(np.array(source.shape) / 2)
    nib.save(ct.slicer[middle], folder / "imagesTs" / "test_000_0000.nii.gz")
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2},
               "numTraining": 2, "file_ending": ".nii.gz"}  # fmt: skip
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder


def _assert_same_grid(prediction: Path, image: Path, classes: int) -> None:
    import SimpleITK as sitk

    pred, ref = sitk.ReadImage(str(prediction)), sitk.ReadImage(str(image))
    assert pred.GetSize() == ref.GetSize()
    np.testing.assert_allclose(pred.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(pred.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(pred.GetDirection(), ref.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayViewFromImage(pred))) <= set(range(classes))


@pytest.mark.slow
def test_nnunet_plans_trains_predicts_and_packages_every_trainer(tmp_path, data_dir):
    from safetensors.torch import save_file

    raw = tmp_path / "raw"
    folder = _write_dataset(data_dir, raw)
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "tiny_trainers.py").write_text(TINY_TRAINERS)
    env = _env(tmp_path, ext)  # nnUNet_n_proc_DA=0: augmentation in the training process (planning needs 1)
    _run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", "991", "-c", "3d_fullres", "-np", "1",
          "-npfp", "1", "--verify_dataset_integrity"], dict(env, nnUNet_n_proc_DA="1"))  # fmt: skip
    plans = json.loads((tmp_path / "preprocessed" / folder.name / "nnUNetPlans.json").read_text())
    planned_patch = plans["configurations"]["3d_fullres"]["patch_size"]

    # A MambaMIM encoder of the tiny HyMamba's size, as `mambamim pretrain` exports it (encoder.* keys).
    model = build_model("hymamba", in_channels=1, out_channels=3, **TINY_HYMAMBA)
    encoder = {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("encoder.")}
    save_file(encoder, str(tmp_path / "encoder.safetensors"))

    results = tmp_path / "results" / folder.name
    for name in TRAINERS:
        trainer = f"nnUNetTrainer{name}Tiny"
        train_env = dict(env, MAMBAMIM_PRETRAINED_ENCODER=str(tmp_path / "encoder.safetensors")) \
            if name == "HyMamba" else env  # fmt: skip
        command = [str(BIN / "nnUNetv2_train"), "991", "3d_fullres", "all", "-tr", trainer, "-device", "cpu"]
        out = _run(command, train_env)
        model_dir = results / f"{trainer}__nnUNetPlans__3d_fullres"
        assert (model_dir / "fold_all" / "checkpoint_final.pth").is_file(), out[-2000:]
        saved_plans = json.loads((model_dir / "plans.json").read_text())
        saved_patch = saved_plans["configurations"]["3d_fullres"]["patch_size"]
        if name == "HyMamba":
            assert f"loaded {len(encoder)}/" in out  # the match report
            assert saved_patch == adapt_patch_size(planned_patch) and all(p % 16 == 0 for p in saved_patch)
        else:
            assert saved_patch == planned_patch
        # nnU-Net's final validation predicted every case with the trained network
        for case in ("case_000", "case_001"):
            _assert_same_grid(model_dir / "fold_all" / "validation" / f"{case}.nii.gz",
                              folder / "imagesTr" / f"{case}_0000.nii.gz", 3)  # fmt: skip

    # nnUNetv2_predict finds the trainer by the name stored in the checkpoint and rebuilds its network
    predicted = tmp_path / "predicted"
    _run([str(BIN / "nnUNetv2_predict"), "-i", str(folder / "imagesTs"), "-o", str(predicted), "-d", "991",
          "-c", "3d_fullres", "-f", "all", "-tr", "nnUNetTrainerHyMambaTiny", "-device", "cpu", "-npp", "1",
          "-nps", "1", "--disable_tta", "--disable_progress_bar"], env)  # fmt: skip
    _assert_same_grid(predicted / "test_000.nii.gz", folder / "imagesTs" / "test_000_0000.nii.gz", 3)

    # back to us: the fold as our package, run by `mambamim segment`
    package = tmp_path / "package"
    hymamba_dir = results / "nnUNetTrainerHyMambaTiny__nnUNetPlans__3d_fullres"
    _run([str(BIN / "mambamim"), "package", "--from-nnunet", str(hymamba_dir), "--out", str(package)], env)
    card = json.loads((package / "model.json").read_text())
    assert card["architecture"]["name"] == "permuted_axes"
    assert card["architecture"]["config"]["network"] == "hymamba"
    assert [(e["value"], e["name"]) for e in card["labels"]] == [(1, "liver"), (2, "spleen")]
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    assert card["input"]["intensity"] == {"type": "clip_zscore", "lower": props["percentile_00_5"],
                                          "upper": props["percentile_99_5"], "mean": props["mean"],
                                          "std": props["std"]}  # fmt: skip
    np.testing.assert_allclose(card["input"]["spacing"], [3.0, 3.0, 3.0], atol=1e-3)
    checkpoint = torch.load(hymamba_dir / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)  # fmt: skip
    from safetensors.torch import load_file

    weights = load_file(str(package / "weights.safetensors"))
    for key, value in checkpoint["network_weights"].items():
        assert torch.equal(weights[f"network.{key}"], value), key
    segmented = tmp_path / "segmented.nii.gz"
    _run([str(BIN / "mambamim"), "segment", "--input", str(folder / "imagesTs" / "test_000_0000.nii.gz"),
          "--output", str(segmented), "--model", str(package), "--device", "cpu"], env)  # fmt: skip
    _assert_same_grid(segmented, folder / "imagesTs" / "test_000_0000.nii.gz", 3)
