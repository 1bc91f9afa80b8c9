"""MambaMIM model: encoder weights load into HyMamba, ablation switches, checkpoints, bad input."""

from __future__ import annotations

import pytest
import torch
from mambamim.checkpoint import save_checkpoint
from mambamim.mim.masking import random_token_mask
from mambamim.mim.model import MambaMIM
from mambamim.nn.registry import build_model
from mambamim.nn.state_dict import load_partial_state_dict

TINY = {"channels": [4, 6, 8, 8, 12], "blocks": [1, 1, 1, 1, 1], "expansion": [2, 2, 2, 2, 2],
        "mamba_depth": 1, "d_state": 4}  # fmt: skip
DEC = [4, 4, 4, 4, 8]
SIZE = (32, 32, 32)


def tiny(**kwargs) -> MambaMIM:
    torch.manual_seed(0)
    encoder_config = {**TINY, **kwargs.pop("encoder", {})}
    return MambaMIM(encoder_config, decoder_channels=DEC, **kwargs)


def predict(model: MambaMIM, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Train mode: the decoder's BatchNorm uses batch statistics, so random-init signals do not vanish.
    model.train()
    with torch.no_grad():
        return model(x, mask=mask).prediction


@pytest.fixture
def batch():
    x = torch.rand(2, 1, *SIZE)
    mask = random_token_mask(2, (2, 2, 2), 0.5, torch.Generator().manual_seed(1))
    return x, mask


def test_encoder_weights_load_into_hymamba_with_no_missing_encoder_key():
    mim = tiny()
    hymamba = build_model("hymamba", in_channels=1, out_channels=3, **TINY)
    report = load_partial_state_dict(hymamba, mim.encoder_state_dict())
    assert not [k for k in report.missing if k.startswith("encoder.")]
    assert report.unexpected == [] and report.shape_mismatched == []
    assert len(report.matched) == len(mim.encoder.state_dict())
    x = torch.rand(1, 1, *SIZE)
    with torch.no_grad():
        dense = mim.encoder(x)[-1]
        assert torch.allclose(hymamba.encoder(x)[-1], dense)


def test_forward_outputs_and_reproducible_masks(batch):
    x, mask = batch
    model = tiny()
    out = model(x, generator=torch.Generator().manual_seed(5))
    again = model(x, generator=torch.Generator().manual_seed(5))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.reconstruction.shape == x.shape and out.prediction.shape == x.shape
    assert out.mask.shape == (2, 2, 2, 2) and out.mask.flatten(1).sum(1).tolist() == [6, 6]
    assert torch.equal(out.mask, again.mask)
    assert torch.equal(model(x, mask=mask).mask, mask)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mask_token_ablation(batch):
    x, mask = batch
    toki, learnable = tiny(), tiny(mask_token="learnable")
    assert "toki.theta" in toki.state_dict() and "mamba_mask_token" not in toki.state_dict()
    assert "mamba_mask_token" in learnable.state_dict() and "toki.theta" not in learnable.state_dict()
    learnable.load_state_dict(toki.state_dict(), strict=False)
    assert not torch.allclose(predict(toki, x, mask), predict(learnable, x, mask))


def test_skip_ablation_removes_skip_layers_and_ignores_cnn_features(batch):
    _, mask = batch
    with_skip, no_skip = tiny(), tiny(skip=False)
    names = set(no_skip.state_dict())
    assert not any(n.startswith(("decoder.fuse", "decoder.proj", "decoder.mask_tokens")) for n in names)
    assert any(n.startswith("decoder.fuse") for n in with_skip.state_dict())
    # Decoder inputs: CNN levels (finest first) + the Mamba map; replace the CNN levels by noise.
    sizes = [32, 16, 8, 4, 2]
    features = [torch.randn(2, c, *(s,) * 3) for c, s in zip(with_skip.encoder.feature_channels, sizes)]
    noisy = [torch.randn_like(f) for f in features[:-1]] + [features[-1]]
    masks = with_skip.level_masks(mask, SIZE)
    with torch.no_grad():
        assert torch.equal(no_skip.decoder(features, masks), no_skip.decoder(noisy, masks))
        assert not torch.allclose(with_skip.decoder(features, masks), with_skip.decoder(noisy, masks))


def test_bottom_up_and_norm_pix_switches_change_behaviour(batch):
    x, mask = batch
    sparse, dense = tiny(), tiny(bottom_up=False)
    dense.load_state_dict(sparse.state_dict())
    assert not torch.allclose(predict(sparse, x, mask), predict(dense, x, mask))
    raw = tiny(norm_pix_loss=False)
    raw.load_state_dict(sparse.state_dict())
    sparse.eval(), raw.eval()
    with torch.no_grad():
        assert sparse(x, mask=mask).loss != raw(x, mask=mask).loss


def test_scan_order_passes_through_the_encoder_config(batch):
    x, mask = batch
    raster, zigzag = tiny(), tiny(encoder={"scan_order": "zigzag"})
    assert zigzag.encoder.mamba.scan_order_name == "zigzag"
    zigzag.load_state_dict(raster.state_dict())
    assert not torch.allclose(predict(raster, x, mask), predict(zigzag, x, mask))


def test_a_few_steps_lower_the_masked_loss():
    torch.manual_seed(0)
    model = tiny()
    x = torch.rand(1, 1, 32, 16, 16) + torch.linspace(0, 1, 32).view(1, 1, -1, 1, 1)
    mask = torch.tensor([[[[True]], [[False]]]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(x, mask=mask).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_bad_arguments_and_inputs_are_refused():
    with pytest.raises(ValueError, match="mask_token"):
        tiny(mask_token="zeros")
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny(mask_ratio=1.0)
    model = tiny()
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.rand(1, 1, 32, 32, 24))
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="mask must have shape"):
        model(torch.rand(1, 1, *SIZE), mask=torch.zeros(1, 3, 2, 2, dtype=torch.bool))


def test_from_checkpoint_round_trip_and_errors(tmp_path, batch):
    x, mask = batch
    model = tiny(mask_token="learnable", skip=False)
    path = tmp_path / "last.pt"
    config = {"model": model.config.as_dict()}  # checkpoints store the configuration as a plain dict
    save_checkpoint(path, {"format": "mambamim-pretrain", "format_version": 1,
                           "config": config, "model": model.state_dict()})  # fmt: skip
    loaded = MambaMIM.from_checkpoint(path)
    assert loaded.config == model.config
    assert torch.allclose(predict(loaded, x, mask), predict(model, x, mask))

    other = tmp_path / "finetune.pt"
    save_checkpoint(other, {"format": "mambamim-finetune", "model": {}})
    with pytest.raises(ValueError, match="finetune"):
        MambaMIM.from_checkpoint(other)
    wrong = tmp_path / "wrong.pt"
    bigger = {**model.config.as_dict(), "decoder_channels": [8, 8, 8, 8, 8]}
    save_checkpoint(
        wrong, {"format": "mambamim-pretrain", "config": {"model": bigger}, "model": model.state_dict()}
    )
    with pytest.raises(ValueError, match=r"wrong\.pt"):
        MambaMIM.from_checkpoint(wrong)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        MambaMIM.from_checkpoint(corrupt)


def test_paper_preset_decoder_has_the_published_width():
    """The authors' ``LightDecoder(width=768)``, halved per scale, with 3³ densify projections (about 91 M
    parameters with them, 47.8 M of which are a fusion block at the Mamba scale their loop never runs;
    Algorithm 2 instead fuses the finest skip too): ours at the same widths."""
    from mambamim.engine.pretrain import make_config

    model = MambaMIM(**make_config("paper", data="unused").model)
    widths = [(u.up.in_channels, u.up.out_channels, u.conv[0].out_channels) for u in model.decoder.up]
    assert widths == [(96, 96, 48), (192, 192, 96), (384, 384, 192), (768, 768, 384)]
    assert model.decoder.bottom_proj.out_channels == 768 and len(model.decoder.fuse) == 4
    never_run = (1536 * 768 * 27 + 768) + 2 * 768 + (768 * 768 * 27 + 768) + 2 * 768
    finest_fusion = sum(p.numel() for p in model.decoder.fuse[0].parameters())
    ours = sum(p.numel() for p in model.decoder.parameters())
    assert 90.5e6 < ours + never_run - finest_fusion < 91.5e6
