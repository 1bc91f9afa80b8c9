"""The network shared by the Taming Mambas variants, on nnU-Net's own building blocks.

Lumetti et al., "Taming Mambas for Voxel Level 3D Medical Image Segmentation" (arXiv 2410.15496), §3, and
their code (github.com/LucaLumetti/TamingMambas, commit 0f1881a, ``tamingmambas/nnunetv2/nets/*.py``):
nnU-Net's residual encoder U-Net from ``dynamic-network-architectures`` (the library nnU-Net builds its
networks with): a one-conv stem, encoder stages of ``BasicBlockD`` residual blocks (conv-norm-LeakyReLU,
conv-norm, shortcut by AvgPool + 1³ conv where the stage downsamples, add, LeakyReLU), a decoder of
transposed convs + skip concatenation + residual blocks, and a 1³ segmentation layer per decoder stage. The
variants differ only in the voxel-level Mamba layer after each encoder stage
(:class:`~mambamim.nn.taming.grid_mamba.GridMamba`) and in whether its output continues down the encoder.

Module names equal the authors' (``encoder.stem``, ``encoder.stages``, ``encoder.mamba_layers``,
``decoder.transpconvs``, ``decoder.stages``, ``decoder.seg_layers``), so a converted nnU-Net checkpoint
loads without renaming. nnU-Net's blocks register every conv and norm twice (``conv`` and
``all_modules.N``); the state dict here holds each tensor once, under the first name, as the converted
checkpoints do. Initialisation as the authors' ``get_*_from_plans``: He (negative slope 0.01) for every
conv, and the last norm of every residual block zeroed, so each block starts as its shortcut.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from dynamic_network_architectures.building_blocks.residual import StackedResidualBlocks
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from dynamic_network_architectures.initialization.weight_init import (
    InitWeights_He,
    init_last_bn_before_add_to_0,
)
from torch import nn

from mambamim.nn.blocks import check_input


def _positive_ints(name: str, values: Sequence[int], length: int) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != length or any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be {length} positive integers, got {values!r}")
    return values


def _conv_kwargs() -> dict[str, Any]:
    """The authors' plans: conv bias, affine InstanceNorm (eps 1e-5), LeakyReLU(0.01), no dropout."""
    return {
        "conv_bias": True,
        "norm_op": nn.InstanceNorm3d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
    }


class TamingEncoder(nn.Module):
    """Stem, residual stages and a Mamba layer per stage; forward returns the skips (bottleneck last)."""

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, ...],
        strides: tuple[int, ...],
        blocks_per_stage: tuple[int, ...],
        kernel_size: int,
        mamba_layer: Callable[[int], nn.Module],
        mamba_in_skips: bool,
    ) -> None:
        super().__init__()
        kwargs = _conv_kwargs()
        self.stem = StackedConvBlocks(1, nn.Conv3d, in_channels, channels[0], kernel_size, 1, **kwargs)
        previous = channels[0]
        stages = []
        for width, stride, blocks in zip(channels, (1, *strides), blocks_per_stage):
            stage = StackedResidualBlocks(blocks, nn.Conv3d, previous, width, kernel_size, stride, **kwargs)
            stages.append(stage)
            previous = width
        self.stages = nn.ModuleList(stages)
        self.mamba_layers = nn.ModuleList(mamba_layer(width) for width in channels)
        self.mamba_in_skips = mamba_in_skips

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage, mamba in zip(self.stages, self.mamba_layers):
            x = stage(x)
            if self.mamba_in_skips:  # SegMambaSkip: only the copy sent to the decoder is mixed
                skips.append(mamba(x))
            else:
                x = mamba(x)
                skips.append(x)
        return skips


class TamingDecoder(nn.Module):
    """nnU-Net's residual decoder: per stage, transposed conv, concatenation with the skip, residual blocks
    and a 1³ segmentation layer (all built, as nnU-Net does, so that every checkpoint loads)."""

    def __init__(
        self,
        channels: tuple[int, ...],
        strides: tuple[int, ...],
        decoder_blocks: tuple[int, ...],
        kernel_size: int,
        out_channels: int,
    ) -> None:
        super().__init__()
        kwargs = _conv_kwargs()
        transpconvs, stages, seg_layers = [], [], []
        for s in range(1, len(channels)):
            below, skip, stride = channels[-s], channels[-(s + 1)], strides[-s]
            transpconvs.append(nn.ConvTranspose3d(below, skip, stride, stride, bias=kwargs["conv_bias"]))
            blocks = decoder_blocks[s - 1]
            stages.append(StackedResidualBlocks(blocks, nn.Conv3d, 2 * skip, skip, kernel_size, 1, **kwargs))
            seg_layers.append(nn.Conv3d(skip, out_channels, 1, 1, 0, bias=True))
        self.transpconvs = nn.ModuleList(transpconvs)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: list[torch.Tensor], all_outputs: bool) -> list[torch.Tensor]:
        """Logits of every stage (lowest resolution first) with ``all_outputs``, else of the last only."""
        x = skips[-1]
        outputs = []
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            x = stage(torch.cat((up(x), skips[-(s + 2)]), 1))
            if all_outputs or s == len(self.stages) - 1:
                outputs.append(self.seg_layers[s](x))
        return outputs


class TamingUNet(nn.Module):
    """Residual encoder U-Net with a voxel-level Mamba layer per encoder stage (the Taming Mambas networks).

    Args:
        in_channels: image channels.
        out_channels: classes (logit channels).
        channels: width of each encoder stage, full resolution first (nnU-Net: min(32·2^i, 320)).
        strides: downsampling into each stage after the first; inputs must be multiples of their product.
        blocks_per_stage: residual blocks per encoder stage (the authors' ``n_conv_per_stage``: 2 under
            nnU-Net's default plans).
        decoder_blocks: residual blocks per decoder stage (``n_conv_per_stage_decoder``: 2 by default).
        kernel_size: conv kernel size.
        deep_supervision: in train mode return logits of every decoder stage, full resolution first (eval
            mode always returns only the full-resolution tensor). Without it the lower-resolution
            segmentation layers still exist (checkpoints load either way) but are frozen.
        mamba_layer: ``factory(width) -> module`` mapping (B, C, D, H, W) to the same shape, per stage.
        mamba_in_skips: see :class:`TamingEncoder`.
    """

    size_multiple: int = 16  # of the default strides; instances hold their own

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        blocks_per_stage: Sequence[int],
        decoder_blocks: Sequence[int] | None,
        kernel_size: int,
        deep_supervision: bool,
        mamba_layer: Callable[[int], nn.Module],
        mamba_in_skips: bool,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if len(tuple(channels)) < 2:
            raise ValueError(f"channels needs at least 2 stages, got {tuple(channels)!r}")
        channels = _positive_ints("channels", channels, len(tuple(channels)))
        strides = _positive_ints("strides", strides, len(channels) - 1)
        blocks_per_stage = _positive_ints("blocks_per_stage", blocks_per_stage, len(channels))
        decoder_blocks = _positive_ints(
            "decoder_blocks", decoder_blocks or (2,) * (len(channels) - 1), len(channels) - 1
        )
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.deep_supervision = deep_supervision
        self.size_multiple = math.prod(strides)
        self.encoder = TamingEncoder(
            in_channels, channels, strides, blocks_per_stage, kernel_size, mamba_layer, mamba_in_skips
        )
        self.decoder = TamingDecoder(channels, strides, decoder_blocks, kernel_size, out_channels)
        self.apply(InitWeights_He(1e-2))
        self.apply(init_last_bn_before_add_to_0)
        if not deep_supervision:  # unused: frozen, so that DDP does not wait for their gradients
            for layer in self.decoder.seg_layers[:-1]:
                layer.requires_grad_(False)
        self._aliases = _alias_names(self)
        self._register_state_dict_hook(_drop_aliases)
        self._register_load_state_dict_pre_hook(_add_aliases, with_module=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input(x, self.in_channels, self.size_multiple, type(self).__name__)
        all_outputs = self.deep_supervision and self.training
        outputs = self.decoder(self.encoder(x), all_outputs)
        return outputs[::-1] if all_outputs else outputs[-1]


def _alias_names(module: nn.Module) -> dict[str, str]:
    """Second names of shared tensors (nnU-Net's ``all_modules.N``) -> their first names."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return aliases


def _drop_aliases(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    for alias in module._aliases:
        state_dict.pop(prefix + alias, None)


def _add_aliases(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    for alias, name in module._aliases.items():
        if prefix + name in state_dict and prefix + alias not in state_dict:
            state_dict[prefix + alias] = state_dict[prefix + name]
