"""The reconstruction figure a researcher can show (issue 13 §2): masked patches distinct from air, the
facts on the figure, the de-normalisation stated, a raw-prediction column, SVG or high-resolution PNG."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from mambamim.checkpoint import save_checkpoint
from mambamim.infer.recon_figure import MASK_TINT, FigureInfo, FigureOptions, save_reconstruction_figure
from mambamim.infer.reconstruct import reconstruct_file
from mambamim.mim.model import MambaMIM
from PIL import Image

WINDOW = {"type": "window", "lower": -175.0, "upper": 250.0}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_mim_encoder):
    torch.manual_seed(0)
    model = MambaMIM(tiny_mim_encoder, decoder_channels=[4, 4, 4, 4, 8])
    path = tmp_path_factory.mktemp("ckpt") / "tiny-untrained.pt"
    training = {"roi": 32, "spacing": [6.0, 6.0, 6.0], "intensity": WINDOW}
    config = {"model": model.config.as_dict(), "training": training}
    save_checkpoint(path, {"format": "mambamim-pretrain", "config": config, "model": model.state_dict()})
    return path


def test_svg_figure_states_its_facts_and_shows_the_raw_prediction(checkpoint, sample_ct, tmp_path):
    result = reconstruct_file(
        checkpoint, sample_ct, tmp_path, mask_ratio=0.6, seed=2, device="cpu",
        figure=FigureOptions(format="svg", raw=True),
    )  # fmt: skip
    path = result.outputs["figure"]
    assert path.name == "ct_reconstruction.svg"
    svg = path.read_text()
    text = " ".join(re.findall(r"<!-- (.*?) -->", svg))  # matplotlib keeps each text as a comment
    facts = [
        "tiny-untrained.pt",
        "mask ratio 0.6",
        "seed 2",
        "-175..250 HU",
        "masked loss",
        "TRUE mean and std",
        "untrained model looks plausible",
        "raw prediction (patch-normalised)",
    ]
    for fact in facts:
        assert fact in text, fact
    assert f"masked loss {result.masked_mse:.4f}" in text


def test_masked_patches_are_tinted_and_the_png_is_high_resolution(sample_ct, tmp_path):
    from mambamim.data.imageio import read_image
    from mambamim.infer.preprocess import to_model_space

    volume, _ = to_model_space(read_image(sample_ct), [6.0] * 3, WINDOW)
    mask = np.zeros(volume.shape, np.uint8)
    mask[: volume.shape[0] // 2] = 1  # model space is RAS: the patient's left half is hidden
    masked = np.where(mask > 0, 0.0, volume).astype(np.float32)
    path = save_reconstruction_figure(
        tmp_path / "f.png", volume, masked, volume, "t", mask=mask, raw=volume * 2,
        info=FigureInfo(checkpoint="c.pt", mask_ratio=0.5), display_range=(0, 1), dpi=120,
    )  # fmt: skip
    with Image.open(path) as png:
        width = png.size[0]
        pixels = np.asarray(png.convert("RGB")).astype(int)
    assert width == round(4 * 2.6 * 120)  # four columns of 2.6 inches at the asked resolution
    # The tint over masked (black, air-like) voxels: MASK_TINT blended over black.
    tint = np.array(MASK_TINT[:3]) * MASK_TINT[3] * 255
    close = np.abs(pixels - tint).sum(axis=2) < 12
    assert close.sum() > 1000
    # ... only in the masked-input column (second of four between margins 0.04 and 0.99 of the width),
    # in its right half: radiological view, the patient's left on the image's right.
    columns = np.nonzero(close.any(axis=0))[0]
    second = (0.04 + 0.95 / 4) * width, (0.04 + 0.95 / 2) * width
    assert (second[0] + second[1]) / 2 - 3 <= columns.min() and columns.max() <= second[1]
    with pytest.raises(ValueError, match="unsupported format"):
        save_reconstruction_figure(tmp_path / "f.jpg", volume, masked, volume)
    with pytest.raises(ValueError, match="one shape"):
        save_reconstruction_figure(tmp_path / "g.png", volume, masked, volume, mask=mask[1:])
    with pytest.raises(ValueError, match="dpi"):
        FigureOptions(dpi=5)
