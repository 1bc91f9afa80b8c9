"""Taming-Mambas networks (SegMamba, BiSegMamba, MultiSegMamba, SegMambaSkip) at tiny sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mambamim.nn import build_model, model_class
from mambamim.nn.scan_orders import SCAN_ORDERS
from mambamim.nn.taming import BiSegMamba, MultiSegMamba, SegMamba, SegMambaSkip
from mambamim.nn.taming.grid_mamba import GridMamba

NAMES = ("segmamba", "bisegmamba", "multisegmamba", "segmambaskip")
TINY = {"channels": (4, 8, 8), "strides": (2, 2), "blocks_per_stage": (1, 1, 1), "d_state": 4,
        "out_channels": 3}
# odd multiples of the tiny models' size multiple (4) along two axes, an even one along the third
ODD_SIZE = (12, 20, 8)


def tiny(name: str, **overrides) -> torch.nn.Module:
    return build_model(name, **{**TINY, **overrides})


def perturb(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_on_odd_sizes(name: str) -> None:
    model = tiny(name, in_channels=2).eval()
    x = torch.randn(2, 2, *ODD_SIZE)
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (2, 3, *ODD_SIZE)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("deep_supervision", [False, True])
def test_backward_reaches_every_parameter(name: str, deep_supervision: bool) -> None:
    model = tiny(name, deep_supervision=deep_supervision).train()
    perturb(model)  # the zero-initialised last norms of the residual blocks would stop some gradients
    x = torch.randn(1, 1, 8, 12, 4)
    outputs = model(x)
    outputs = outputs if deep_supervision else [outputs]
    loss = sum(
        F.cross_entropy(out, torch.randint(0, 3, (1, *out.shape[2:]))) for out in outputs
    )
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    silent = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"no gradient reaches {silent}"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    # without deep supervision only the unused lower-resolution segmentation layers are frozen
    assert all(n.startswith("decoder.seg_layers.") for n in frozen)
    assert bool(frozen) != deep_supervision


@pytest.mark.parametrize("name", NAMES)
def test_deep_supervision_list_in_train_tensor_in_eval(name: str) -> None:
    model = tiny(name, channels=(4, 8, 8, 8), strides=(2, 2, 2), blocks_per_stage=(1, 1, 1, 1),
                 deep_supervision=True)
    x = torch.randn(1, 1, 8, 8, 16)
    outputs = model.train()(x)
    assert isinstance(outputs, list)
    assert [tuple(o.shape[2:]) for o in outputs] == [(8, 8, 16), (4, 4, 8), (2, 2, 4)]
    assert all(o.shape[:2] == (1, 3) for o in outputs)
    with torch.no_grad():
        y = model.eval()(x)
    assert isinstance(y, torch.Tensor) and y.shape == (1, 3, 8, 8, 16)
    # eval output is the train-mode full-resolution head (no dropout / batch statistics involved)
    torch.testing.assert_close(y, outputs[0].detach())
    # without deep supervision training also returns one tensor
    assert isinstance(tiny(name).train()(x), torch.Tensor)


def test_multisegmamba_uses_four_distinct_axis_orders_in_both_directions() -> None:
    model = tiny("multisegmamba")
    layers = model.encoder.mamba_layers
    assert all(len(layer.scans) == 4 for layer in layers)
    assert all(hasattr(scan, "bwd_mamba") for layer in layers for scan in layer.scans)
    assert not any(hasattr(layer, "norm") for layer in layers)  # the authors' MultiSegMamba: no outer norm

    layer = GridMamba(4, 4, axis_orders=layers[0].axis_orders, bidirectional=True).eval()
    grid = (3, 4, 5)
    orders = layer.token_orders(grid, torch.device("cpu"))
    assert len({tuple(perm.tolist()) for perm, _ in orders}) == 4
    raster = torch.arange(60).reshape(grid)
    for axes, (perm, inverse) in zip(layer.axis_orders, orders):
        torch.testing.assert_close(perm, raster.permute(axes).flatten())
        torch.testing.assert_close(perm[inverse], torch.arange(60))

    x = torch.randn(1, 4, *grid)
    with torch.no_grad():
        reference = layer(x)
    changed = []
    for scan in layer.scans:
        for direction in ("fwd_mamba", "bwd_mamba"):
            state = {k: v.clone() for k, v in layer.state_dict().items()}
            perturb(getattr(scan, direction))
            with torch.no_grad():
                changed.append(not torch.allclose(layer(x), reference, atol=1e-5))
            layer.load_state_dict(state)
    assert all(changed), f"(axis order, direction) branches without effect: {changed}"


@pytest.mark.parametrize("scan_order", SCAN_ORDERS)
def test_grid_mamba_matches_manual_scan(scan_order: str) -> None:
    """Gather in (axis order ∘ scan order), scan, scatter back == the same by hand on the permuted grid."""
    from mambamim.nn.scan_orders import scan_permutation

    layer = GridMamba(6, 4, axis_orders=((2, 0, 1),), bidirectional=True, outer_norm=False,
                      scan_order=scan_order, seed=3).eval()
    x = torch.randn(2, 6, 3, 4, 5)
    with torch.no_grad():
        y = layer(x)
        permuted = x.permute(0, 1, 4, 2, 3)  # (B, C, W, D, H): axis order (2, 0, 1)
        order = scan_permutation(scan_order, tuple(permuted.shape[2:]), seed=3)
        seq = permuted.flatten(2)[:, :, order].transpose(1, 2)
        out_seq = layer.scans[0](seq).transpose(1, 2)
        restored = torch.empty_like(out_seq)
        restored[:, :, order] = out_seq
        expected = restored.reshape(permuted.shape).permute(0, 1, 3, 4, 2)
    torch.testing.assert_close(y, expected)


def test_scan_order_changes_the_output() -> None:
    x = torch.randn(1, 1, 8, 8, 8)
    outputs = {}
    for scan_order in SCAN_ORDERS:
        torch.manual_seed(0)
        model = tiny("segmamba", scan_order=scan_order).eval()
        perturb(model)
        with torch.no_grad():
            outputs[scan_order] = model(x)
    for scan_order in SCAN_ORDERS[1:]:
        assert not torch.allclose(outputs[scan_order], outputs["raster"], atol=1e-5), scan_order


def test_mamba_layers_as_published() -> None:
    """d_state = min(C, 256) per stage (min(C, 64) in MultiSegMamba), an outer LayerNorm before the scan
    (none in MultiSegMamba), nnU-Net's BasicBlockD with the AvgPool + 1³ conv shortcut."""
    from dynamic_network_architectures.building_blocks.residual import BasicBlockD

    for name, cap in (("segmamba", 256), ("bisegmamba", 256), ("segmambaskip", 256), ("multisegmamba", 64)):
        model = build_model(name, channels=(8, 96, 320), strides=(2, 2), blocks_per_stage=(1, 1, 1))
        for width, layer in zip((8, 96, 320), model.encoder.mamba_layers):
            for scan in layer.scans:
                for direction in (scan.fwd_mamba, scan.bwd_mamba) if hasattr(scan, "fwd_mamba") else (scan,):
                    assert direction.mamba.d_state == min(width, cap), (name, width)
            assert hasattr(layer, "norm") == (name != "multisegmamba")
    model = tiny("segmamba")
    block = model.encoder.stages[1].blocks[0]
    assert isinstance(block, BasicBlockD)
    assert isinstance(block.skip[0], torch.nn.AvgPool3d) and block.skip[1].conv.kernel_size == (1, 1, 1)
    assert len(build_model("segmamba").encoder.stages[0].blocks) == 2  # nnU-Net default plans: 2 per stage
    assert all(not b.conv2.norm.weight.detach().any() for s in model.encoder.stages for b in s.blocks)


def _stage_io(model: torch.nn.Module, x: torch.Tensor) -> tuple[list, list, list]:
    """Inputs and outputs of each encoder stage and outputs of each Mamba layer, in call order."""
    stage_in, stage_out, mamba_out = [], [], []

    def record_stage(module, inputs, output) -> None:
        stage_in.append(inputs[0])
        stage_out.append(output)

    def record_mamba(module, inputs, output) -> None:
        mamba_out.append(output)

    hooks = [s.register_forward_hook(record_stage) for s in model.encoder.stages]
    hooks += [m.register_forward_hook(record_mamba) for m in model.encoder.mamba_layers]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return stage_in, stage_out, mamba_out


def test_segmambaskip_mixes_skips_not_main_path() -> None:
    x = torch.randn(1, 1, 8, 8, 8)
    skip_model = tiny("segmambaskip").eval()
    perturb(skip_model)
    stage_in, stage_out, mamba_out = _stage_io(skip_model, x)
    for i in range(1, len(stage_in)):
        torch.testing.assert_close(stage_in[i], stage_out[i - 1])
        assert not torch.allclose(stage_in[i], mamba_out[i - 1])
    stage_in, stage_out, mamba_out = _stage_io(tiny("segmamba").eval(), x)
    for i in range(1, len(stage_in)):
        torch.testing.assert_close(stage_in[i], mamba_out[i - 1])


def test_bad_input_errors() -> None:
    model = tiny("bisegmamba", in_channels=2).eval()
    with pytest.raises(ValueError, match="in_channels=2"):
        model(torch.randn(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.randn(1, 2, 8, 10, 8))
    with pytest.raises(ValueError, match="D, H, W"):
        model(torch.randn(2, 8, 8, 8))
    with pytest.raises(ValueError, match="multiple of 16"):
        SegMamba(channels=(2, 2, 2, 2, 2), d_state=2)(torch.randn(1, 1, 24, 16, 16))


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="strides"):
        SegMamba(channels=(4, 8, 8), strides=(2, 2, 2))
    with pytest.raises(ValueError, match="in_channels"):
        SegMamba(in_channels=0)
    with pytest.raises(ValueError, match="blocks_per_stage"):
        SegMambaSkip(channels=(4, 8), strides=(2,), blocks_per_stage=(1, 0))
    with pytest.raises(ValueError, match="axis_orders"):
        MultiSegMamba(**TINY, axis_orders=((0, 1, 2), (0, 1, 2)))
    with pytest.raises(ValueError, match="axis_orders"):
        MultiSegMamba(**TINY, axis_orders=((0, 1, 3),))
    with pytest.raises(ValueError, match="raster, zigzag, hilbert, shuffle"):
        BiSegMamba(**TINY, scan_order="spiral")


def test_registry_and_size_multiple() -> None:
    expected = {"segmamba": SegMamba, "bisegmamba": BiSegMamba, "multisegmamba": MultiSegMamba,
                "segmambaskip": SegMambaSkip}
    for name, cls in expected.items():
        assert model_class(name) is cls
        assert cls.size_multiple == 16
        model = tiny(name)
        assert isinstance(model, cls)
        assert model.size_multiple == 4


def test_training_after_inference_mode_call():
    """Token orders cached under torch.inference_mode must still serve a later training backward."""
    model = build_model("segmamba", channels=(4, 8, 8, 8, 8), blocks_per_stage=(1, 1, 1, 1, 1), d_state=2)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        model.eval()(x)
    model.train()(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
