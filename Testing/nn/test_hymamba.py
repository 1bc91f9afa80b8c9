"""HyMamba (MambaMIM §3.1): structure, shapes, gradients, masking guarantee, parameter count, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mambamim.nn import build_model
from mambamim.nn.blocks import ChannelLayerNorm, ResidualConvBlock, UpBlock, upsample_transposed
from mambamim.nn.hymamba import HyMamba, HyMambaEncoder, MedNeXtBlock
from mambamim.nn.vision_mamba import VisionMambaStage, sincos_position_embedding_3d


def _assert_all_grads(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad}"


@pytest.mark.parametrize(("scan_order", "bidirectional"), [("raster", False), ("hilbert", True)])
def test_tiny_forward_on_odd_size_and_backward_reaches_every_parameter(
    tiny_hymamba, scan_order, bidirectional
):
    model = HyMamba(in_channels=2, scan_order=scan_order, bidirectional=bidirectional, **tiny_hymamba)
    x = torch.randn(2, 2, 32, 48, 64)
    logits = model(x)
    assert logits.shape == (2, 3, 32, 48, 64)
    assert logits.is_contiguous()
    F.cross_entropy(logits, torch.randint(0, 3, (2, 32, 48, 64))).backward()
    _assert_all_grads(model)


def test_encoder_feature_pyramid_and_module_structure(tiny_hymamba_encoder):
    """Published layout: skip i has C_{i+1} channels at 1/2^i, the bottleneck C4 at 1/16."""
    enc = HyMambaEncoder(in_channels=1, **tiny_hymamba_encoder)
    feats = enc(torch.randn(1, 1, 16, 32, 48))
    assert [tuple(f.shape) for f in feats] == [
        (1, 8, 16, 32, 48), (1, 8, 8, 16, 24), (1, 12, 4, 8, 12), (1, 12, 2, 4, 6), (1, 12, 1, 2, 3)
    ]  # fmt: skip
    assert enc.feature_channels == (8, 8, 12, 12, 12) == tuple(f.shape[1] for f in feats)
    assert len(enc.stages) == 5 and [len(s) for s in enc.stages] == [1, 1, 2, 1, 1]
    assert [s[0].dwconv.in_channels for s in enc.stages] == [4, 8, 8, 12, 12]  # level i blocks at C_i
    assert len(enc.downsamples) == 4
    assert isinstance(enc.downsamples[0].pool, torch.nn.MaxPool3d)
    assert enc.downsamples[2].conv.in_channels == 8 and enc.downsamples[2].conv.out_channels == 12
    assert isinstance(enc.mamba, VisionMambaStage) and len(enc.mamba.layers) == 2
    assert all(f.is_contiguous(memory_format=torch.channels_last_3d) for f in feats[:4])


def test_encoder_follows_the_documented_dataflow(tiny_hymamba_encoder):
    """f = stem(x); per level: stages[i], raw skip s_i = downsamples[i].conv, pool; stages[4]; mamba; the
    returned skips are skip_blocks[i](s_i) — by hand."""
    enc = HyMambaEncoder(**tiny_hymamba_encoder).eval()
    x = torch.randn(1, 1, 16, 16, 32)
    with torch.no_grad():
        f = enc.stem(x)
        expected = []
        for i in range(4):
            for block in enc.stages[i]:
                f = block(f)
            f = enc.downsamples[i].conv(f)
            expected.append(enc.skip_blocks[i](f))
            f = F.max_pool3d(f, 2)
        for block in enc.stages[4]:
            f = block(f)
        expected.append(enc.mamba(f))
        got = enc(x)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)


def test_decoder_follows_the_published_layout(tiny_hymamba):
    model = HyMamba(**tiny_hymamba)
    skips = [(b.conv1.in_channels, b.conv1.out_channels) for b in model.encoder.skip_blocks]
    assert skips == [(8, 8), (8, 8), (12, 12), (12, 12)]
    # published norms: LayerNorm + conv bias in the skip blocks and the last block, MONAI's
    # parameter-free instance norm in the up blocks, no norm after the Mamba stage
    for block in model.encoder.skip_blocks:
        assert block.conv1.bias is not None and isinstance(block.norm1, ChannelLayerNorm)
    assert model.out_block.conv1.bias is not None and isinstance(model.out_block.norm1, ChannelLayerNorm)
    assert all(u.block.norm1.weight is None and u.block.conv1.bias is None for u in model.up_blocks)
    assert isinstance(model.encoder.mamba.norm, torch.nn.Identity)
    assert len(HyMamba().encoder.stages[0]) == 0  # no MedNeXt block at full resolution
    ups = [
        (u.upsample.in_channels, u.upsample.out_channels, u.block.conv1.in_channels) for u in model.up_blocks
    ]
    assert ups == [(8, 8, 16), (12, 8, 16), (12, 12, 24), (12, 12, 24)]  # (from, to, to + skip)
    assert (model.out_block.conv1.in_channels, model.out_block.conv1.out_channels) == (8, 4)
    assert model.head.in_channels == 4 and model.head.out_channels == 3


def test_hymamba_state_dict_splits_encoder_and_decoder(tiny_hymamba, tiny_hymamba_encoder):
    keys = list(HyMamba(**tiny_hymamba).state_dict())
    enc_keys = [k for k in keys if k.startswith("encoder.")]
    encoder_keys = set(HyMambaEncoder(**tiny_hymamba_encoder).state_dict())
    assert {k[len("encoder.") :] for k in enc_keys} == encoder_keys
    assert "encoder.mamba.layers.0.mixer.A_log" in keys
    assert any(k.startswith("up_blocks.") for k in keys)
    assert any(k.startswith("encoder.skip_blocks.") for k in keys)
    assert not any("pos" in k or "cache" in k for k in keys)  # position embedding is not a weight


def test_mednext_block_matches_conv_reference():
    """pw1/pw2 are Linear layers on the channels-last view: equal to 1³ convs with the same weights."""
    block = MedNeXtBlock(6, 3, kernel_size=3).double()
    x = torch.randn(2, 6, 5, 4, 7, dtype=torch.double)
    y = block.dwconv(x)
    y = y.permute(0, 2, 3, 4, 1)
    y = F.layer_norm(y, (6,), block.norm.weight, block.norm.bias, eps=1e-6).permute(0, 4, 1, 2, 3)
    y = F.conv3d(y, block.pw1.weight[..., None, None, None], block.pw1.bias)
    y = F.conv3d(F.gelu(y), block.pw2.weight[..., None, None, None], block.pw2.bias)
    torch.testing.assert_close(block(x), x + y)
    cl = x.contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(block(cl), x + y)


def test_mednext_block_never_leaks_masked_voxels():
    torch.manual_seed(1)
    block = MedNeXtBlock(5, 2, kernel_size=3)
    mask = (torch.rand(1, 1, 6, 6, 6) > 0.6).float()
    x = torch.randn(1, 5, 6, 6, 6)
    other = x + 100 * torch.randn_like(x) * (1 - mask)  # differs only where masked
    with torch.no_grad():
        a = mask * block(mask * x)
        b = mask * block(mask * other)
    torch.testing.assert_close(a, b)


def test_vision_mamba_stage_orders_tokens_and_puts_them_back():
    stage = VisionMambaStage(12, depth=1, d_state=4, scan_order="hilbert").eval()
    x = torch.randn(2, 12, 2, 3, 4)
    with torch.no_grad():
        out = stage(x)
        seq = x.flatten(2).transpose(1, 2) + stage.position_embedding((2, 3, 4), x.device, x.dtype)
        perm, inverse = stage.scan_order((2, 3, 4), x.device)
        ref = stage.forward_sequence(seq[:, perm])[:, inverse].transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(out, ref)
    raster = VisionMambaStage(12, depth=1, d_state=4, scan_order="raster").eval()
    raster.load_state_dict(stage.state_dict())
    with torch.no_grad():
        assert not torch.allclose(raster(x), out)  # the order matters to a causal scan


def test_vision_mamba_stage_returns_intermediate_layers():
    stage = VisionMambaStage(12, depth=3, d_state=4, scan_order="zigzag").eval()
    x = torch.randn(1, 12, 2, 2, 2)
    with torch.no_grad():
        out, taken = stage(x, return_layers=(1, 3))
        torch.testing.assert_close(out, stage(x))
    assert len(taken) == 2 and all(t.shape == x.shape for t in taken)
    with pytest.raises(ValueError, match="return_layers"):
        stage(x, return_layers=(4,))


def test_position_embedding_is_fixed_sincos_in_raster_order():
    emb = sincos_position_embedding_3d((2, 3, 4), 6)  # one frequency (1.0) per axis
    assert emb.shape == (24, 6)
    # token (d=1, h=2, w=3) is raster index 1*12 + 2*4 + 3 = 23
    t = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(emb[23], torch.stack([t.sin(), t.cos()], dim=1).flatten())
    assert sincos_position_embedding_3d((2, 3, 4), 12).shape == (24, 12)
    padded = sincos_position_embedding_3d((2, 2, 2), 8)
    assert torch.all(padded[:, 6:] == 0)
    with pytest.raises(ValueError, match="dim"):
        sincos_position_embedding_3d((2, 2, 2), 4)


def test_default_parameter_count_is_the_published_models():
    """The published ``build_hybird(1, 14)`` has 41,841,134 parameters; its forward never uses the 316,416
    backward-scan parameters, and 82,944 are its fixed position embedding (``official/hymamba.json``)."""
    model = build_model("hymamba")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 41_441_774
    assert 41_841_134 - 316_416 - 82_944 == 41_441_774


def test_bad_inputs_are_rejected_with_clear_messages(tiny_hymamba):
    model = HyMamba(**tiny_hymamba)
    with pytest.raises(ValueError, match="in_channels=1"):
        model(torch.randn(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.randn(1, 1, 16, 24, 16))
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        model(torch.randn(1, 16, 16, 16))
    with pytest.raises(ValueError, match=r"scan_order.*hilbert"):
        HyMamba(scan_order="diagonal", **tiny_hymamba)
    with pytest.raises(ValueError, match="same length"):
        HyMamba(channels=(4, 8, 8), blocks=(1, 1), expansion=(2, 2, 2))
    with pytest.raises(ValueError, match="norm"):
        HyMamba(norm="group", **tiny_hymamba)


def test_in_place_residual_adds_keep_gradients_exact():
    """MedNeXt and residual conv blocks add their shortcut in place; gradcheck proves autograd agrees."""
    torch.manual_seed(2)
    mednext = MedNeXtBlock(3, 2).double()
    res = ResidualConvBlock(3, 4, norm="instance").double()
    x = torch.randn(1, 3, 2, 3, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: res(mednext(t)), (x,), fast_mode=True)


def test_transposed_upsampling_matches_conv_transpose():
    up = UpBlock(6, 2, 3).double()
    x = torch.randn(2, 6, 2, 3, 2, dtype=torch.double, requires_grad=True)
    w = up.upsample.weight.detach().clone().requires_grad_(True)
    ours = upsample_transposed(x, w, None)
    ref = F.conv_transpose3d(x, w, stride=2)
    torch.testing.assert_close(ours, ref)
    assert ours.is_contiguous(memory_format=torch.channels_last_3d)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(ours, (x, w), g), torch.autograd.grad(ref, (x, w), g))


def test_residual_block_pointwise_shortcut_equals_its_conv():
    block = ResidualConvBlock(3, 5).double().eval()
    x = torch.randn(2, 3, 4, 3, 5, dtype=torch.double)
    conv, norm = block.shortcut
    y = block.norm2(block.conv2(block.act(block.norm1(block.conv1(x)))))
    expected = F.leaky_relu(y + norm(conv(x)), 0.01)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
        torch.testing.assert_close(block(x.contiguous(memory_format=torch.channels_last_3d)), expected)


def test_stage_trains_after_a_first_call_under_inference_mode():
    """Validation under torch.inference_mode must not poison the per-grid caches used in training."""
    stage = VisionMambaStage(12, depth=1, d_state=4, scan_order="hilbert")
    x = torch.randn(1, 12, 2, 2, 2)
    with torch.inference_mode():
        stage(x)
    stage(x.requires_grad_(True)).sum().backward()
    assert x.grad is not None and stage.layers[0].norm1.weight.grad is not None
