"""Mandatory leakage test of the sparse HyMamba encoder (MambaMIM §3.2, bottom-up hybrid masking).

Changing the voxels inside masked patches must not change any encoder output at a visible position,
at any stage, nor the Mamba output; with TOKI and mask tokens the whole reconstruction is unchanged.
"""

from __future__ import annotations

import pytest
import torch
from mambamim.mim.masking import random_token_mask
from mambamim.mim.model import MambaMIM
from mambamim.mim.sparse import cnn_features, visible_mamba_sequence

TINY = {"channels": (4, 6, 8, 8, 12), "blocks": (1, 2, 1, 1, 1), "expansion": (2, 2, 2, 2, 2),
        "mamba_depth": 2, "d_state": 4, "kernel_size": 3}  # fmt: skip
SIZE = (32, 48, 32)
GRID = (2, 3, 2)


def perturb_masked(x: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    return torch.where(pixel_mask, torch.randn_like(x) * 10 + 5, x)


def sparse_outputs(model: MambaMIM, x: torch.Tensor, mask: torch.Tensor):
    masks = model.level_masks(mask, SIZE)
    features = cnn_features(model.encoder, x, masks)
    sequence, masked_seq, _ = visible_mamba_sequence(model.encoder.mamba, features[-1], mask)
    return masks, features, sequence, masked_seq


@pytest.mark.parametrize("scan_order", ["raster", "hilbert"])
def test_masked_voxels_do_not_leak_into_visible_outputs(scan_order):
    model = MambaMIM({**TINY, "scan_order": scan_order}, decoder_channels=(4, 4, 4, 4, 4))
    # Non-trivial weights everywhere (biases included) so that any leak would show.
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.rand(2, 1, *SIZE)
    mask = random_token_mask(2, GRID, 0.5, torch.Generator().manual_seed(0))
    masks = model.level_masks(mask, SIZE)
    x2 = perturb_masked(x, masks[0])
    assert not torch.equal(x, x2)

    with torch.no_grad():
        _, feats_a, seq_a, masked_seq = sparse_outputs(model, x, mask)
        _, feats_b, seq_b, _ = sparse_outputs(model, x2, mask)
    for level, (fa, fb, m) in enumerate(zip(feats_a, feats_b, masks)):
        visible = ~m.expand_as(fa)
        assert torch.allclose(fa[visible], fb[visible], atol=1e-6, rtol=0), f"leak at level {level}"
        assert float(fa[~visible].abs().max()) == 0.0, f"masked positions not zero at level {level}"
        assert float(fa[visible].abs().max()) > 0.0
    vis = ~masked_seq
    assert torch.allclose(seq_a[vis], seq_b[vis], atol=1e-6, rtol=0), "leak into the Mamba output"

    # Everything the decoder reads is built from visible outputs only: the full prediction is identical.
    with torch.no_grad():
        out_a, out_b = model(x, mask=mask), model(x2, mask=mask)
    assert torch.allclose(out_a.prediction, out_b.prediction, atol=1e-5, rtol=0)


def test_dense_cnn_would_leak():
    """Negative control: the same check fails when the CNN stages see the whole image."""
    model = MambaMIM(TINY, decoder_channels=(4, 4, 4, 4, 4))
    x = torch.rand(1, 1, *SIZE)
    mask = random_token_mask(1, GRID, 0.5, torch.Generator().manual_seed(0))
    masks = model.level_masks(mask, SIZE)
    x2 = perturb_masked(x, masks[0])
    with torch.no_grad():
        fa = cnn_features(model.encoder, x, None)[0]
        fb = cnn_features(model.encoder, x2, None)[0]
    visible = ~masks[0].expand_as(fa)
    assert not torch.allclose(fa[visible], fb[visible], atol=1e-6, rtol=0)


def test_without_bottom_up_masking_stages_get_independent_masks_and_nothing_leaks():
    """Table 9 "w/o bottom-up masking": every CNN stage has its own mask of the same ratio, not derived
    from the Mamba mask (only consistency is removed), and the masked target voxels still never reach
    the prediction."""
    model = MambaMIM({**TINY, "blocks": (0, 1, 1, 1, 1)}, bottom_up=False, mask_ratio=0.5,
                     decoder_channels=(4, 4, 4, 4, 4))  # fmt: skip
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.rand(2, 1, *SIZE)
    mask = random_token_mask(2, GRID, 0.5, torch.Generator().manual_seed(0))
    consistent = model.level_masks(mask, SIZE)
    stage_masks = model.independent_level_masks(2, SIZE, torch.Generator().manual_seed(5), x.device)
    tokens = GRID[0] * GRID[1] * GRID[2]
    for level, (own, derived) in enumerate(zip(stage_masks, consistent)):
        assert own.shape == derived.shape
        # same ratio: the token-grid mask upsampled, round(0.5 * N) tokens per sample
        assert own.float().mean().item() == pytest.approx(round(0.5 * tokens) / tokens)
        assert not torch.equal(own, derived), f"stage {level} mask equals the Mamba mask"
    assert any(not torch.equal(a[:, :, ::2**i, ::2**i, ::2**i], b[:, :, :: 2 ** (i + 1), :: 2 ** (i + 1),
               :: 2 ** (i + 1)]) for i, (a, b) in enumerate(zip(stage_masks, stage_masks[1:])))  # fmt: skip

    x2 = perturb_masked(x, consistent[0])
    with torch.no_grad():
        out_a = model(x, mask=mask, generator=torch.Generator().manual_seed(5))
        out_b = model(x2, mask=mask, generator=torch.Generator().manual_seed(5))
        feats = cnn_features(model.encoder, x * (~consistent[0]).float(), stage_masks)
    assert torch.allclose(out_a.prediction, out_b.prediction, atol=1e-5, rtol=0), "target voxels leaked"
    for level, (f, m) in enumerate(zip(feats, stage_masks)):
        assert float(f[m.expand_as(f)].abs().max()) == 0.0, f"stage {level} not masked by its own mask"
    # each stage's masks are drawn anew: another generator gives another prediction
    with torch.no_grad():
        out_c = model(x, mask=mask, generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(out_a.prediction, out_c.prediction)


def test_sparse_path_runs_the_encoder_dataflow():
    """With nothing masked, the sparse CNN path equals the dense encoder: skips taken after each raising
    conv (before pooling), then the map entering the Mamba stage."""
    model = MambaMIM(TINY, decoder_channels=(4, 4, 4, 4, 4)).eval()
    x = torch.rand(1, 1, *SIZE)
    nothing = torch.zeros(1, *GRID, dtype=torch.bool)
    with torch.no_grad():
        dense = model.encoder(x)
        for features in (
            cnn_features(model.encoder, x, None),
            cnn_features(model.encoder, x, model.level_masks(nothing, SIZE)),
        ):
            assert [f.shape[1] for f in features] == list(model.encoder.feature_channels)
            for skip, want in zip(features[:-1], dense[:-1]):
                torch.testing.assert_close(skip, want)
            torch.testing.assert_close(model.encoder.mamba(features[-1]), dense[-1])
