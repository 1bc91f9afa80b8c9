"""Vanilla Mamba (UNETR with a Vision-Mamba encoder): shapes, skips, gradients, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mambamim.nn.vanilla_mamba import VanillaMamba

TINY = dict(hidden_size=12, depth=4, feature_size=4, d_state=4, out_channels=3, img_size=32)


def test_tiny_forward_on_odd_size_and_backward_reaches_every_parameter():
    model = VanillaMamba(in_channels=2, scan_order="zigzag", **TINY)
    x = torch.randn(1, 2, 16, 32, 48)
    logits = model(x)
    assert logits.shape == (1, 3, 16, 32, 48)
    F.cross_entropy(logits, torch.randint(0, 3, (1, 16, 32, 48))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_skips_are_monai_unetrs():
    """MONAI's UNETR feeds its decoder ``hidden_states_out[3]``, ``[6]``, ``[9]``: the outputs of blocks 4, 7
    and 10 counting from 1 (read from the installed MONAI's source, not restated)."""
    import inspect
    import re

    from monai.networks.nets import UNETR

    indices = [int(i) for i in re.findall(r"hidden_states_out\[(\d+)\]", inspect.getsource(UNETR.forward))]
    assert indices == [3, 6, 9]
    assert VanillaMamba().skip_layers == tuple(i + 1 for i in indices) == (4, 7, 10)
    model = VanillaMamba(**{**TINY, "depth": 8}).eval()
    assert model.skip_layers == (3, 5, 7) and len(model.mamba.layers) == 8
    seen = []
    for i in model.skip_layers:
        model.mamba.layers[i - 1].register_forward_hook(lambda mod, inp, out: seen.append(out))
    with torch.no_grad():
        model(torch.randn(1, 1, 32, 32, 32))
    assert len(seen) == 3 and all(s.shape == (1, 8, 12) for s in seen)  # 2³ tokens of width 12


def test_default_size_and_structure():
    model = VanillaMamba()
    assert model.patch_embed.kernel_size == (16, 16, 16) and model.patch_embed.out_channels == 768
    assert len(model.mamba.layers) == 12
    n = sum(p.numel() for p in model.parameters())
    assert 80e6 < n < 130e6


def test_bad_arguments_and_inputs():
    model = VanillaMamba(**TINY)
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.randn(1, 1, 32, 40, 32))
    with pytest.raises(ValueError, match="in_channels=1"):
        model(torch.randn(1, 3, 32, 32, 32))
    with pytest.raises(ValueError, match="patch_size"):
        VanillaMamba(patch_size=8)
    with pytest.raises(ValueError, match="depth"):
        VanillaMamba(depth=6)
    with pytest.raises(ValueError, match="img_size"):
        VanillaMamba(img_size=100)
    with pytest.raises(ValueError, match="scan_order"):
        VanillaMamba(scan_order="nope", **TINY)
