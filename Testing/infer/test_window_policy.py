"""Window policy: the card's windows, or larger windows at lower overlap chosen from the memory estimate."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from infer_helpers import ThresholdNet, make_threshold_package, register_threshold_model
from mambamim.infer.sliding_window import window_slices
from mambamim.infer.window_policy import AUTO_POLICY, plan_windows, resolve_policy, window_count
from torch import nn

SAMPLE_GRID = (244, 202, 224)  # the sample CT resampled to 1.5 mm


@pytest.mark.parametrize(
    "shape, roi, overlap",
    [(SAMPLE_GRID, 96, 0.5), (SAMPLE_GRID, 144, 0.25), ((61, 50, 56), 64, 0.5), ((100, 33, 97), 32, 0.25)],
)
def test_window_count_is_monais_grid(shape, roi, overlap):
    padded = [max(s, roi) for s in shape]
    assert window_count(shape, [roi] * 3, overlap) == len(window_slices(padded, [roi] * 3, overlap))


def plan(policy="large", free_bytes=10**12, network=None, shape=SAMPLE_GRID, card_roi=96):
    return plan_windows(
        network or ThresholdNet(), shape, [card_roi] * 3, 0.5, policy=policy, device_type="cpu",
        activation_per_voxel=1000.0, free_bytes=free_bytes,
    )  # fmt: skip


def test_card_policy_keeps_the_card():
    p = plan("card")
    assert (p.roi, p.overlap, p.windows) == ((96, 96, 96), 0.5, 80)  # the 80 windows at 1.5 mm


def test_large_policy_picks_fewest_voxel_evaluations():
    p = plan("large")
    # 96³ at 0.25: 36 windows; 160³: 8; 144³: 8 windows of fewer voxels, the minimum of 96..160
    assert (p.roi, p.overlap, p.windows) == ((144, 144, 144), 0.25, 8)
    candidates = {
        side: window_count(SAMPLE_GRID, [side] * 3, 0.25) * side**3 for side in range(96, 161, 16)
    }
    assert p.voxel_evaluations == min(candidates.values())
    assert plan("card").voxel_evaluations / p.voxel_evaluations > 2.9
    assert "fewest voxel-evaluations" in p.reason


def test_large_policy_respects_the_memory_estimate():
    # 0.4 x 1000 B x 112³ = 562 MB fits in half of 1.3 GB; 128³ (839 MB) does not
    p = plan("large", free_bytes=1_300_000_000)
    assert p.roi == (96, 96, 96) and p.overlap == 0.25 and p.windows == 36
    tiny = plan("large", free_bytes=1)
    assert tiny.roi == (96, 96, 96) and tiny.overlap == 0.25


def test_large_windows_never_exceed_a_small_grid():
    p = plan("large", shape=(70, 40, 100), card_roi=32)
    assert all(r <= -(-s // 16) * 16 for r, s in zip(p.roi, (70, 40, 100)))
    assert all(r >= 32 and r % 16 == 0 for r in p.roi)


def test_fixed_size_networks_and_auto_keep_the_card():
    class FixedSize(nn.Module):
        pass

    assert plan("large", network=FixedSize()).roi == (96, 96, 96)
    assert plan("large", network=FixedSize()).overlap == 0.5
    assert resolve_policy("auto", "cpu") == AUTO_POLICY["cpu"]
    with pytest.raises(ValueError, match="unknown window policy 'huge'"):
        resolve_policy("huge", "cpu")


def test_segment_with_large_windows_matches_card_for_a_voxelwise_model(tmp_path, monkeypatch, sample_ct):
    """ThresholdNet is voxel-wise: window size and overlap cannot change its labels, only the run."""
    from mambamim.data.imageio import read_image
    from mambamim.infer.package import load_package
    from mambamim.infer.segment import segment_image

    register_threshold_model(monkeypatch)
    package_dir = make_threshold_package(tmp_path / "pkg", spacing=(4.5, 4.5, 4.5), roi=(32, 32, 32))
    package = load_package(package_dir)
    image = read_image(sample_ct)
    card, large = (segment_image(image, package, device="cpu", window_policy=p) for p in ("card", "large"))
    # 81x67x75 grid: 36 windows of 32³ at the card's 0.25; 8 of 48³ (fewer voxel-evaluations)
    assert card.windows == {"policy": "card", "roi": [32, 32, 32], "overlap": 0.25, "count": 36}
    assert large.windows == {"policy": "large", "roi": [48, 48, 48], "overlap": 0.25, "count": 8}
    a, b = (sitk.GetArrayFromImage(r.labels) for r in (card, large))
    assert np.array_equal(a, b)


def test_cli_windows_option_reaches_the_run(tmp_path, monkeypatch, sample_ct, capsys):
    from mambamim.cli import main

    register_threshold_model(monkeypatch)
    package_dir = make_threshold_package(tmp_path / "pkg", spacing=(6.0, 6.0, 6.0), roi=(32, 32, 32))
    out = tmp_path / "labels.nii.gz"
    args = ["segment", "--model", str(package_dir), "--input", str(sample_ct), "--output", str(out)]
    assert main([*args, "--windows", "large", "--progress", "json"]) == 0
    messages = capsys.readouterr().out
    assert out.exists() and "(large: fewest voxel-evaluations" in messages
    with pytest.raises(SystemExit):
        main([*args, "--windows", "giant", "--overwrite"])
