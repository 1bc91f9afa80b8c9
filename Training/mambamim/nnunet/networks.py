"""Our networks built from an nnU-Net v2 plan (``plans.json`` configuration); no nnU-Net import here.

- HyMamba (MambaMIM §3.1) always pools four times by 2, so every patch axis must be a multiple of 16; its
  Mamba stage runs on the (patch / 16) token grid of the plan's patch size (position embedding and scan
  order are computed for that grid). :func:`adapt_patch_size` rounds a plan's patch size up to that
  multiple the way nnU-Net's planners make a patch divisible by the network's total stride; the
  trainers apply it before nnU-Net reads the plan, so training, validation and the saved ``plans.json``
  (which ``nnUNetv2_predict`` reads) agree.
- The Taming Mambas networks take the plan's architecture as their authors' ``get_*_from_plans`` do:
  ``features_per_stage``, ``strides``, blocks per stage and kernel size. Our implementation downsamples
  every axis alike, so a plan with anisotropic strides or kernels is refused, naming the stage and axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mambamim.errors import InvalidInput

HYMAMBA_SIZE_MULTIPLE = 16
TAMING_MODELS = ("segmamba", "bisegmamba", "multisegmamba", "segmambaskip")


def adapt_patch_size(patch_size: Sequence[int], multiple: int = HYMAMBA_SIZE_MULTIPLE) -> list[int]:
    """Each axis rounded up to a multiple of ``multiple`` (nnU-Net's planners pad the patch the same way)."""
    return [max(multiple, -(-int(s) // multiple) * multiple) for s in patch_size]


def check_patch_size(patch_size: Sequence[int], multiple: int, model: str) -> None:
    """Refuse, naming the axis, a patch size the network cannot take."""
    if len(patch_size) != 3:
        raise InvalidInput(f"{model} is a 3-D network; the plan's patch size {list(patch_size)} is not 3-D "
                         "(use the 3d_fullres or 3d_lowres configuration)")
    for axis, size in enumerate(patch_size):
        if size % multiple:
            raise InvalidInput(
                f"{model} needs every patch axis to be a multiple of {multiple}; the plan's patch size "
                f"{list(patch_size)} has {size} on axis {axis}. Use the MambaMIM trainer, which rounds it "
                f"up to {adapt_patch_size(patch_size, multiple)}, or edit patch_size in the plans."
            )


def hymamba_config(
    patch_size: Sequence[int], in_channels: int, out_channels: int, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``build_model("hymamba", **config)`` arguments for a plan's patch size; ``overrides`` replace
    constructor defaults (e.g. a smaller width)."""
    check_patch_size(patch_size, HYMAMBA_SIZE_MULTIPLE, "HyMamba")
    return {"in_channels": in_channels, "out_channels": out_channels, **dict(overrides or {})}


def _isotropic(values: Sequence[Sequence[int]], what: str) -> list[int]:
    """One number per stage from the plan's per-axis lists; refuses anisotropic entries naming the axis."""
    out = []
    for stage, per_axis in enumerate(values):
        per_axis = [int(v) for v in per_axis]
        for axis, value in enumerate(per_axis):
            if value != per_axis[0]:
                raise InvalidInput(
                    f"the plan's {what} of stage {stage} is {per_axis}: axis {axis} differs from axis 0. The "
                    "Taming Mambas networks here treat every axis alike; plan with isotropic target spacing "
                    "(e.g. nnUNetv2_plan_and_preprocess -overwrite_target_spacing) or resample the data."
                )
        out.append(per_axis[0])
    return out


def taming_config_from_plan(arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a Taming Mambas network from a plan's ``network_arch_init_kwargs``."""
    strides = _isotropic(arch_kwargs["strides"], "stride")
    if strides[0] != 1:
        raise InvalidInput(
            f"the plan's first stage has stride {strides[0]}; the stem runs at full "
            "resolution"
        )
    kernels = set(_isotropic(arch_kwargs["kernel_sizes"], "kernel size"))
    if len(kernels) != 1:
        raise InvalidInput(f"the plan uses several kernel sizes {sorted(kernels)}; these networks take one")
    blocks = arch_kwargs.get("n_blocks_per_stage", arch_kwargs.get("n_conv_per_stage"))
    return {
        "channels": [int(c) for c in arch_kwargs["features_per_stage"]],
        "strides": strides[1:],
        "blocks_per_stage": [int(b) for b in blocks],
        "decoder_blocks": [int(b) for b in arch_kwargs["n_conv_per_stage_decoder"]],
        "kernel_size": kernels.pop(),
    }


def taming_config(
    model: str,
    arch_kwargs: Mapping[str, Any],
    patch_size: Sequence[int],
    in_channels: int,
    out_channels: int,
    deep_supervision: bool,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``build_model(model, **config)`` arguments of a Taming Mambas network (``model`` in
    :data:`TAMING_MODELS`) with the plan's architecture; ``overrides`` replace entries (e.g. narrower
    ``channels`` with the same number of stages)."""
    if model not in TAMING_MODELS:
        raise InvalidInput(f"unknown Taming Mambas network {model!r}; valid: {', '.join(TAMING_MODELS)}")
    config = {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "deep_supervision": deep_supervision,
        **taming_config_from_plan(arch_kwargs),
        **dict(overrides or {}),
    }
    check_patch_size(patch_size, math.prod(config["strides"]), model)
    return config
