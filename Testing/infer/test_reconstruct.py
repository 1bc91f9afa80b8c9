"""`mambamim reconstruct` on a real CT scan with a tiny random-weight MambaMIM checkpoint."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from mambamim.checkpoint import save_checkpoint
from mambamim.commands import reconstruct as command
from mambamim.infer.reconstruct import output_paths, reconstruct_file
from mambamim.mim.model import MambaMIM

WINDOW = {"type": "window", "lower": -175.0, "upper": 250.0}


def main(argv: list[str]) -> int:
    """`mambamim reconstruct ARGV` through the command module's own parser and run()."""
    parser = argparse.ArgumentParser(prog="mambamim reconstruct")
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_mim_encoder):
    torch.manual_seed(0)
    model = MambaMIM(tiny_mim_encoder, decoder_channels=[4, 4, 4, 4, 8])
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    # 6 mm model spacing keeps the 122x101x112 (3 mm) scan to 8 crops of 32^3.
    training = {"roi": 32, "spacing": [6.0, 6.0, 6.0], "intensity": WINDOW}
    config = {"model": model.config.as_dict(), "training": training}
    save_checkpoint(path, {"format": "mambamim-pretrain", "config": config, "model": model.state_dict()})
    return path


def test_reconstruct_writes_volumes_on_the_input_grid_and_a_figure(checkpoint, sample_ct, tmp_path):
    events = []
    result = reconstruct_file(checkpoint, sample_ct, tmp_path, mask_ratio=0.75, seed=3, device="cpu",
                              progress=events.append, fmt="nrrd")  # fmt: skip
    assert set(result.outputs) == {"masked", "reconstruction", "mask", "figure"}
    assert result.crops == 8 and np.isfinite(result.masked_mse)
    source = sitk.ReadImage(str(sample_ct))
    for name in ("masked", "reconstruction", "mask"):
        image = sitk.ReadImage(str(result.outputs[name]))
        assert image.GetSize() == source.GetSize()
        assert np.allclose(image.GetSpacing(), source.GetSpacing())
        assert np.allclose(image.GetOrigin(), source.GetOrigin())
        assert np.allclose(image.GetDirection(), source.GetDirection())
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(result.outputs["mask"])))
    masked = sitk.GetArrayFromImage(sitk.ReadImage(str(result.outputs["masked"])))
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert 0.55 < mask.mean() < 0.95  # 75 % of the tokens of every crop, seen through resampling
    # masked voxels hold the window's lower bound (normalised background), in HU
    assert np.median(masked[mask == 1]) == pytest.approx(-175.0)
    assert masked[mask == 0].max() > 0.0
    figure = result.outputs["figure"].read_bytes()
    assert figure.startswith(b"\x89PNG") and len(figure) > 10_000
    stages = [e.stage for e in events]
    assert stages[0] == "load" and "reconstruct" in stages and stages[-1] == "write"
    assert [e.fraction for e in events] == sorted(e.fraction for e in events)

    # same seed -> same masks; existing outputs are refused without overwrite
    with pytest.raises(FileExistsError, match="overwrite"):
        reconstruct_file(checkpoint, sample_ct, tmp_path, seed=3, device="cpu", fmt="nrrd")


def test_cli_json_progress_and_refusals(checkpoint, sample_ct, tmp_path, capsys):
    argv = ["--checkpoint", str(checkpoint), "--input", str(sample_ct), "--output-dir",
            str(tmp_path), "--seed", "1", "--device", "cpu", "--progress", "json"]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(set(line) >= {"stage", "fraction", "eta_s", "message"} for line in lines)
    assert lines[-1]["stage"] == "done"
    outputs = lines[-1]["outputs"]
    assert outputs == {k: str(v) for k, v in output_paths(sample_ct, tmp_path, "nii.gz").items()}
    before = {name: (tmp_path / path).stat().st_mtime_ns for name, path in outputs.items()}

    assert main(argv) == 1  # outputs exist
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["stage"] == "error" and "--overwrite" in last["message"]
    assert before == {name: (tmp_path / path).stat().st_mtime_ns for name, path in outputs.items()}
    assert main([*argv, "--overwrite", "--progress", "none"]) == 0

    finetune = tmp_path / "finetune.pt"
    save_checkpoint(finetune, {"format": "mambamim-finetune", "model": {}})
    argv[1] = str(finetune)
    assert main([*argv, "--overwrite"]) == 1
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["stage"] == "error" and "finetune" in last["message"]


def test_cancelled_run_writes_nothing(checkpoint, sample_ct, tmp_path):
    from mambamim.infer.progress import Cancelled, CancelToken

    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        reconstruct_file(checkpoint, sample_ct, tmp_path / "out", device="cpu", cancel=cancel)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_crops_are_batched_with_the_same_result(checkpoint, sample_ct):
    from mambamim.infer.preprocess import to_model_space
    from mambamim.infer.reconstruct import default_crop_batch, reconstruct_volume
    from mambamim.mim.model import load_pretrain_checkpoint

    payload = load_pretrain_checkpoint(checkpoint)
    model = MambaMIM.from_payload(payload, checkpoint).eval()
    volume, _ = to_model_space(sitk.ReadImage(str(sample_ct)), [6.0] * 3, WINDOW)
    done = []
    cpu = torch.device("cpu")
    one = reconstruct_volume(model, volume, 32, 0.75, 5, cpu, batch=1)
    three = reconstruct_volume(model, volume, 32, 0.75, 5, cpu, lambda d, t: done.append(d), batch=3)
    assert done == [3, 6, 8]  # 8 crops in forward passes of 3, 3 and 2
    for a, b in zip(one[:3], three[:3]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert three[3] == pytest.approx(one[3], rel=1e-5)  # masked MSE: the mean over crops either way
    assert default_crop_batch(96) == 4 and default_crop_batch(32) == 64 and default_crop_batch(256) == 1
