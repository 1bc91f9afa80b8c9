"""Taming Mambas checkpoints (nnU-Net ``network_weights``): which variant and configuration they hold.

Our networks keep the authors' module names (:mod:`mambamim.nn.taming.network`), so conversion
(:func:`mambamim.infer.convert.convert_taming`) drops the aliases nnU-Net saves (``decoder.encoder.*``:
the encoder again, held by their decoder; ``*.all_modules.N.*``: each conv and norm a second time) and
infers the configuration from the shapes (here). BiSegMamba (their ``PanSegMamba``) and SegMambaSkip have
the same parameters and differ only in the forward: the trainer name stored in nnU-Net checkpoints tells
them apart, else the caller must (``model=``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

ALIAS_REASON = "nnU-Net alias of a tensor kept under its first name"


def taming_variant(state: Mapping[str, torch.Tensor], trainer_name: str = "") -> str:
    """Registry name of the variant whose parameters ``state`` holds."""
    if any(".mambas." in k for k in state):
        return "multisegmamba"
    if any(".fwd_mamba." in k for k in state):
        return "segmambaskip" if "skip" in trainer_name.lower() else "bisegmamba"
    if any(k.startswith("encoder.mamba_layers.") for k in state):
        return "segmamba"
    raise ValueError("no encoder.mamba_layers.* keys: not a Taming Mambas (SegMamba family) checkpoint")


def taming_config(state: Mapping[str, torch.Tensor], variant: str) -> dict[str, Any]:
    """Constructor arguments inferred from the tensor shapes (strides of 2, which shapes cannot show)."""
    stages = sorted({int(m[1]) for k in state if (m := re.match(r"encoder\.stages\.(\d+)\.", k))})
    if not stages or "encoder.stem.convs.0.conv.weight" not in state:
        raise ValueError("no encoder.stem / encoder.stages keys: not an nnU-Net residual encoder network")

    def blocks(prefix: str, stage: int) -> int:
        pattern = re.compile(rf"{prefix}\.stages\.{stage}\.blocks\.(\d+)\.")
        return len({m[1] for k in state if (m := pattern.match(k))})

    channels = [int(state[f"encoder.stages.{s}.blocks.0.conv1.conv.weight"].shape[0]) for s in stages]
    stem = state["encoder.stem.convs.0.conv.weight"]
    config: dict[str, Any] = {
        "in_channels": int(stem.shape[1]),
        "out_channels": int(state["decoder.seg_layers.0.weight"].shape[0]),
        "channels": channels,
        "strides": [2] * (len(channels) - 1),
        "blocks_per_stage": [blocks("encoder", s) for s in stages],
        "decoder_blocks": [blocks("decoder", s) for s in range(len(channels) - 1)],
        "kernel_size": int(stem.shape[-1]),
    }
    states = []
    for s in stages:
        prefix = f"encoder.mamba_layers.{s}."
        a_log = next(v for k, v in state.items() if k.startswith(prefix) and k.endswith("A_log"))
        states.append(int(a_log.shape[1]))
    cap = 64 if variant == "multisegmamba" else 256
    if states != [min(c, cap) for c in channels]:  # not the authors' per-stage rule: one fixed size?
        if len(set(states)) != 1:
            raise ValueError(f"per-stage d_state {states} follows neither min(C, {cap}) nor one fixed size")
        config["d_state"] = states[0]
    return config
