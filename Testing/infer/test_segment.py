"""`segment`: cancellation writes nothing, bad input, batch mode, OOM fallback, --reference, real networks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from infer_helpers import (
    ThresholdNet,
    expected_labels,
    run_segment,
)
from mambamim.data.imageio import read_image, write_image
from mambamim.infer.package import load_package
from mambamim.infer.progress import Cancelled, CancelToken
from mambamim.infer.segment import segment_file, segment_image
from mambamim.infer.sliding_window import sliding_window_logits


def test_cancel_after_first_window_writes_nothing(small_ct, threshold_pkg, tmp_path):
    cancel = CancelToken()
    windows = []

    def progress(event):
        if event.stage == "inference" and event.message.startswith("window"):
            windows.append(event.message)
            cancel.cancel()

    out = tmp_path / "out" / "labels.nii.gz"
    with pytest.raises(Cancelled):
        segment_file(
            small_ct, out, threshold_pkg, device="cpu", sw_batch_size=1, progress=progress, cancel=cancel
        )
    # Stopped right after the first of several windows, not at the end.
    assert len(windows) == 1 and windows[0].startswith("window 1/") and windows[0] != "window 1/1"
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_cli_writes_labels_and_reports_dice_against_reference(small_ct, threshold_pkg, tmp_path, capsys):
    reference = tmp_path / "ref.nrrd"
    image = read_image(small_ct)
    truth = sitk.GetImageFromArray(expected_labels(image))
    truth.CopyInformation(image)
    write_image(truth, reference)
    out = tmp_path / "labels.nrrd"
    argv = [
        "--model",
        str(threshold_pkg),
        "--input",
        str(small_ct),
        "--output",
        str(out),
        "--device",
        "cpu",
        "--progress",
        "none",
        "--reference",
        str(reference),
    ]
    assert run_segment(argv) == 0
    printed = capsys.readouterr().out
    assert "body" in printed and "1.000" in printed and "wrote" in printed
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(read_image(out, allow_constant=True)), expected_labels(image)
    )
    # An existing output is refused without --overwrite, and left untouched.
    before = out.read_bytes()
    assert run_segment(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert run_segment([*argv, "--overwrite", "--fast", "--keep-largest"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--modality", "MR"], "is for CT images"), (["--device", "cuda"], "CUDA")],
)
def test_refusals(small_ct, threshold_pkg, tmp_path, capsys, extra, message):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "labels.nii.gz"
    argv = [
        "--model",
        str(threshold_pkg),
        "--input",
        str(small_ct),
        "--output",
        str(out),
        "--progress",
        "none",
    ]
    assert run_segment([*argv, *extra]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_bad_input_volume_is_refused_before_any_work(threshold_pkg, tmp_path, capsys):
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.Image([16, 16, 16], sitk.sitkInt16), str(flat))
    assert (
        run_segment(
            [
                "--model",
                str(threshold_pkg),
                "--input",
                str(flat),
                "--output",
                str(tmp_path / "o.nii.gz"),
                "--progress",
                "none",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "constant" in err and "flat.nrrd" in err


def test_batch_skips_a_bad_file_and_writes_timings(small_ct, threshold_pkg, tmp_path, capsys):
    folder = small_ct.parent
    sitk.WriteImage(read_image(small_ct)[:40, :40, :40], str(folder / "crop.nrrd"))
    (folder / "broken.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "segs"
    assert (
        run_segment(
            [
                "--model",
                str(threshold_pkg),
                "--input",
                str(folder),
                "--output",
                str(out),
                "--device",
                "cpu",
                "--progress",
                "none",
                "--format",
                "nrrd",
            ]
        )
        == 0
    )
    with open(out / "timings.csv") as handle:
        rows = {r["case"]: r for r in csv.DictReader(handle)}
    assert {k: r["status"] for k, r in rows.items()} == {"broken": "error", "crop": "ok", "ct": "ok"}
    assert "cannot read" in rows["broken"]["message"] and float(rows["ct"]["seconds"]) > 0
    assert sorted(p.name for p in out.iterdir()) == [
        "crop_seg.nrrd", "crop_seg.seg.nrrd", "ct_seg.nrrd", "ct_seg.seg.nrrd", "timings.csv"
    ]  # fmt: skip
    assert "2/3" in capsys.readouterr().out


class OomOnBigBatches(ThresholdNet):
    """Raises CUDA's out-of-memory error for more than one window at a time."""

    def forward(self, x):
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


def test_out_of_memory_halves_the_window_batch():
    volume = torch.rand(1, 40, 40, 40)
    notes = []
    net = OomOnBigBatches()
    got = sliding_window_logits(volume, net, (32, 32, 32), 0.5, sw_batch_size=4, report=notes.append)
    want = sliding_window_logits(volume, ThresholdNet(), (32, 32, 32), 0.5, sw_batch_size=1)
    torch.testing.assert_close(got, want)
    assert notes == [
        "out of memory: retrying with sw_batch_size=2",
        "out of memory: retrying with sw_batch_size=1",
    ]


def test_sliding_window_matches_monai():
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1).eval()
    volume = torch.rand(1, 40, 50, 20)
    ours = sliding_window_logits(volume, net, (32, 32, 32), 0.5, sw_batch_size=2)
    with torch.no_grad():
        theirs = sliding_window_inference(volume[None], (32, 32, 32), 2, net, overlap=0.5, mode="gaussian")[0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_real_hymamba_package_end_to_end(small_ct, tmp_path):
    """A (tiny, random) HyMamba through the whole engine: right grid, labels within the card's values."""
    from mambamim.data.intensity import CT_WINDOW
    from mambamim.infer.package import make_card, save_package
    from mambamim.nn import build_model

    config = {"out_channels": 3, "channels": (4, 8, 8, 8, 16), "blocks": (1, 1, 1, 1, 1), "mamba_depth": 1}
    card = make_card(
        name="tiny",
        labels={"1": "a", "2": "b"},
        modality="CT",
        spacing=(12.0, 12.0, 12.0),
        intensity=CT_WINDOW,
        roi_size=(32, 32, 32),
        overlap=0.25,
    )
    pkg = save_package(
        tmp_path / "hy",
        model_name="hymamba",
        model_config=config,
        state_dict=build_model("hymamba", **config).state_dict(),
        card=card,
    )
    image = read_image(small_ct)
    result = segment_image(image, load_package(pkg), device="cpu")
    assert result.labels.GetSize() == image.GetSize() and result.labels.GetDirection() == image.GetDirection()
    assert set(np.unique(sitk.GetArrayFromImage(result.labels))) <= {0, 1, 2}
    assert set(result.timings) == {"preprocess", "inference", "postprocess"}


def test_memory_estimate_refuses_with_advice(small_ct, threshold_pkg, tmp_path, monkeypatch):
    import mambamim.infer.segment as segment_module

    monkeypatch.setattr(segment_module, "available_bytes", lambda device: 100 * 2**20)
    out = tmp_path / "labels.nii.gz"
    with pytest.raises(MemoryError, match=r"only 100\.0 MiB is available; try --fast"):
        segment_file(small_ct, out, threshold_pkg, device="cpu")
    assert not out.exists()


def test_keep_largest_component_per_organ():
    from mambamim.infer.postprocess import keep_largest_component

    labels = np.zeros((20, 20, 20), np.uint8)
    labels[1:6, 1:6, 1:6] = 1  # organ 1: 125 voxels ...
    labels[10:12, 10:12, 10:12] = 1  # ... and an 8-voxel island
    labels[15:18, 15:18, 15:18] = 2  # organ 2: one component, kept whole
    labels[0, 19, 19] = 3  # organ 3 is not post-processed
    labels[2, 19, 19] = 3
    out = keep_largest_component(labels, [1, 2])
    assert (out == 1).sum() == 125 and (out[10:12, 10:12, 10:12] == 0).all()
    assert (out == 2).sum() == 27 and (out == 3).sum() == 2


@pytest.mark.cuda
def test_cuda_matches_cpu(small_ct, threshold_pkg):
    image = read_image(small_ct)
    package = load_package(threshold_pkg)
    on_gpu = segment_image(image, package, device="cuda")
    on_cpu = segment_image(image, package, device="cpu")
    assert on_gpu.device.startswith("cuda")
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(on_gpu.labels), sitk.GetArrayFromImage(on_cpu.labels)
    )
