"""Build any network of the zoo by name: ``build_model("hymamba", out_channels=14)``.

Hyper-parameter defaults live in each model's constructor (one source of truth); this table only maps
names to classes, imported lazily so that building one model never imports the others.
"""

from __future__ import annotations

import importlib

from torch import nn

# name -> "module:Class", relative to mambamim.nn
MODELS: dict[str, str] = {
    "hymamba": "hymamba:HyMamba",
    "vanilla_mamba": "vanilla_mamba:VanillaMamba",
    "segmamba": "taming:SegMamba",
    "bisegmamba": "taming:BiSegMamba",
    "multisegmamba": "taming:MultiSegMamba",
    "segmambaskip": "taming:SegMambaSkip",
    "unetr": "baselines:UNETRBaseline",
    "swin_unetr": "baselines:SwinUNETRBaseline",
    "permuted_axes": "axis_order:PermutedAxes",  # nnU-Net-trained networks (arrays [z, y, x])
}


def model_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``; unknown names list the valid ones."""
    try:
        target = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(sorted(MODELS))}") from None
    module_name, class_name = target.split(":")
    module = importlib.import_module(f"mambamim.nn.{module_name}")
    return getattr(module, class_name)


def build_model(name: str, **config) -> nn.Module:
    """Instantiate the network ``name`` with ``config`` overriding its constructor defaults."""
    return model_class(name)(**config)
