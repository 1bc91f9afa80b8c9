"""The inference path of the conv blocks (autograd off, CPU): in-place instance norm, results written
straight into concatenation buffers. It must compute what the autograd path computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mambamim.nn.blocks import InstanceNorm, ResidualConvBlock, UpBlock, reuse_buffers, upsample_transposed
from mambamim.nn.hymamba import HyMamba
from torch import nn

CL = torch.channels_last_3d


def _affine(norm: InstanceNorm) -> InstanceNorm:
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    return norm


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_in_place_instance_norm_matches_group_norm_per_item(memory_format):
    torch.manual_seed(0)
    norm = _affine(InstanceNorm(5))
    # items with very different offsets and scales: statistics must not be pooled over the batch
    x = torch.randn(3, 5, 4, 6, 5) * torch.tensor([0.1, 3.0, 20.0]).view(3, 1, 1, 1, 1) + 7
    x = x.contiguous(memory_format=memory_format)
    # float64 reference: PyTorch's own channels-last fp32 group norm is off by ~1e-2 on item 0 here
    expected = F.group_norm(x.double(), 5, norm.weight.double(), norm.bias.double(), norm.eps).float()
    work = x.clone(memory_format=memory_format)
    with torch.no_grad():
        result = norm.normalize_(work)
    assert result.data_ptr() == work.data_ptr()
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)


def test_parameter_free_instance_norm_in_place_matches_monai_default():
    """MONAI's default ``("instance", {"affine": False})``, as the published HyMamba decoder uses it."""
    torch.manual_seed(1)
    norm = InstanceNorm(4, affine=False)
    assert norm.weight is None and not list(norm.parameters())
    x = (torch.randn(2, 4, 3, 5, 4) * 4 + 2).contiguous(memory_format=CL)
    expected = nn.InstanceNorm3d(4, affine=False)(x)
    torch.testing.assert_close(norm(x), expected, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(norm.normalize_(x.clone(memory_format=CL)), expected, rtol=1e-4, atol=1e-4)


def test_instance_norm_state_dict_interchanges_with_group_norm():
    ours, theirs = InstanceNorm(6), nn.GroupNorm(6, 6)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    _affine(ours)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 3, 3, 3)
    torch.testing.assert_close(ours(x), theirs(x))


def test_buffers_are_reused_only_without_autograd_and_on_cpu():
    x = torch.zeros(1)
    assert not reuse_buffers(x)
    with torch.no_grad():
        assert reuse_buffers(x)
    with torch.inference_mode():
        assert reuse_buffers(x)
    if torch.cuda.is_available():
        with torch.no_grad():
            assert not reuse_buffers(x.cuda())


@pytest.mark.parametrize("shortcut", ["conv", "identity"])
def test_residual_block_writes_into_a_buffer_slice(shortcut):
    torch.manual_seed(1)
    block = ResidualConvBlock(4, 6 if shortcut == "conv" else 4).eval()
    for norm in (block.norm1, block.norm2):
        _affine(norm)
    x = torch.randn(2, 4, 5, 6, 4).contiguous(memory_format=CL)
    expected = block(x)  # autograd on: the plain path
    with torch.no_grad():
        buffer = torch.full((2, 9, 5, 6, 4), float("nan")).contiguous(memory_format=CL)
        returned = block(x, out=buffer[:, 2 : 2 + expected.shape[1]])
        in_place = block(x.clone())
    torch.testing.assert_close(returned, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(buffer[:, 2 : 2 + expected.shape[1]], expected, rtol=1e-4, atol=1e-4)
    assert buffer[:, :2].isnan().all() and buffer[:, 2 + expected.shape[1] :].isnan().all()
    torch.testing.assert_close(in_place, expected, rtol=1e-4, atol=1e-4)


def test_upsampling_into_a_buffer_slice_matches_conv_transpose():
    x = torch.randn(2, 6, 2, 3, 2, dtype=torch.double)
    weight = torch.randn(6, 3, 2, 2, 2, dtype=torch.double)
    buffer = torch.zeros(2, 5, 4, 6, 4, dtype=torch.double).contiguous(memory_format=CL)
    upsample_transposed(x, weight, None, out=buffer[:, 1:4])
    torch.testing.assert_close(buffer[:, 1:4], F.conv_transpose3d(x, weight, stride=2))
    assert (buffer[:, 0] == 0).all() and (buffer[:, 4] == 0).all()


@pytest.mark.parametrize("with_skip_block", [False, True])
def test_up_block_buffer_path_equals_concatenation(with_skip_block):
    torch.manual_seed(2)
    up = UpBlock(6, 3, 4).eval()
    skip_block = ResidualConvBlock(3, 3).eval() if with_skip_block else None
    x, skip = torch.randn(2, 6, 2, 3, 2), torch.randn(2, 3, 4, 6, 4)
    expected = up(x, skip, skip_block)
    with torch.inference_mode():
        result = up(x, skip, skip_block)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)


def test_hymamba_inference_equals_training_forward_and_keeps_its_input(tiny_hymamba):
    torch.manual_seed(3)
    model = HyMamba(**tiny_hymamba).eval()
    for module in model.modules():  # the published decoder's instance norms have no parameters
        if isinstance(module, InstanceNorm) and module.weight is not None:
            _affine(module)
    x = torch.randn(2, 1, 32, 32, 48)
    original = x.clone()
    expected = model(x)
    with torch.inference_mode():
        result = model(x)
    torch.testing.assert_close(result, expected, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(x, original, rtol=0, atol=0)
