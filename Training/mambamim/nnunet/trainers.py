"""nnU-Net v2 trainers for our networks; nnU-Net finds them by class name (see :mod:`mambamim.nnunet`).

Each trainer keeps nnU-Net's recipe unchanged (data augmentation, Dice+CE, SGD with poly schedule, 1000
epochs of 250 iterations, fp16 autocast and gradient scaling on CUDA only, as ``nnUNetTrainer.train_step``
does) and replaces only the network, built by ``build_network_architecture`` both at training and in
``nnUNetv2_predict``. The selective scan backend is resolved per call as everywhere in ``mambamim``:
pure PyTorch on the CPU, the CUDA kernels when installed and the tensors are on a GPU
(``MAMBAMIM_SCAN_BACKEND`` forces one).

Subclass to change the network or the schedule, e.g. a narrower HyMamba for 100 epochs::

    class nnUNetTrainerHyMambaSmall_100epochs(nnUNetTrainerHyMamba):
        network_config = {"channels": (16, 32, 64, 96, 192)}

        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)  # nnU-Net saves these names
            self.num_epochs = 100

Starting from a MambaMIM encoder: set ``MAMBAMIM_PRETRAINED_ENCODER=/path/encoder.safetensors`` for
``nnUNetv2_train ... -tr nnUNetTrainerHyMamba``; the encoder weights are loaded into the built network
and a match report is printed and logged (nnU-Net's own ``-pretrained_weights`` expects an nnU-Net
checkpoint, not a safetensors file).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from mambamim.nn.registry import build_model
from mambamim.nnunet.networks import adapt_patch_size, hymamba_config, taming_config

PRETRAINED_ENV = "MAMBAMIM_PRETRAINED_ENCODER"

__all__ = [
    "MambaMIMTrainer",
    "nnUNetTrainerBiSegMamba",
    "nnUNetTrainerHyMamba",
    "nnUNetTrainerMultiSegMamba",
    "nnUNetTrainerSegMamba",
    "nnUNetTrainerSegMambaSkip",
]


def _bare(network: nn.Module) -> nn.Module:
    """The network under DDP and ``torch.compile`` wrappers."""
    network = getattr(network, "module", network)
    return getattr(network, "_orig_mod", network)


class MambaMIMTrainer(nnUNetTrainer):
    """nnU-Net's trainer with one of our networks (``model_name`` in ``mambamim.nn.registry.MODELS``).

    ``network_config`` overrides the network's constructor arguments (and, for the Taming networks, the
    plan's architecture); ``patch_multiple`` (HyMamba: 16) makes the plan's patch size fit the network.
    """

    model_name: ClassVar[str] = ""
    network_config: ClassVar[dict[str, Any]] = {}
    patch_multiple: ClassVar[int | None] = None
    deep_supervision: ClassVar[bool] = True

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature)
    ) -> None:  # fmt: skip
        plans = self._fit_patch_size(plans, configuration)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = self.deep_supervision

    @classmethod
    def _fit_patch_size(cls, plans: dict, configuration: str) -> dict:
        """A copy of ``plans`` whose configuration's patch size the network accepts (rounded up)."""
        if cls.patch_multiple is None:
            return plans
        patch = PlansManager(plans).get_configuration(configuration).patch_size
        fitted = adapt_patch_size(patch, cls.patch_multiple)
        if list(patch) == fitted:
            return plans
        print(f"{cls.__name__}: patch size {list(patch)} of the plan rounded up to {fitted} "
              f"(multiples of {cls.patch_multiple}); the results folder's plans.json records it")  # fmt: skip
        plans = copy.deepcopy(plans)
        plans["configurations"][configuration]["patch_size"] = fitted
        return plans

    @classmethod
    def build_network_architecture(
        cls,
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """Called by nnU-Net at training (``initialize``) and by ``nnUNetv2_predict``."""
        return build_model(cls.model_name, **cls.network_spec(
            configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision
        ))  # fmt: skip

    @classmethod
    def network_spec(
        cls,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool,
    ) -> dict[str, Any]:
        """``build_model(cls.model_name, **spec)`` arguments for this plan (also used by packaging)."""
        patch = configuration_manager.patch_size
        if cls.model_name == "hymamba":
            return hymamba_config(patch, num_input_channels, num_output_channels, cls.network_config)
        return taming_config(
            cls.model_name, configuration_manager.network_arch_init_kwargs, patch, num_input_channels,
            num_output_channels, enable_deep_supervision and cls.deep_supervision, cls.network_config,
        )  # fmt: skip

    def initialize(self) -> None:
        from mambamim.ops.backends import backend_report

        super().initialize()
        self.print_to_log_file(f"{self.model_name} network, scan backend: {backend_report()}")
        encoder = os.environ.get(PRETRAINED_ENV)
        if encoder:
            from mambamim.engine.finetune import load_pretrained

            load_pretrained(_bare(self.network), Path(encoder), self.print_to_log_file)

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's validation loss takes every deep-supervision output; our Taming networks give them in
        train mode only. No layer of theirs behaves differently in train mode (instance norms without
        running statistics, no dropout), so validate in train mode there (under nnU-Net's no_grad)."""
        network = _bare(self.network)
        if not (self.enable_deep_supervision and getattr(network, "deep_supervision", False)):
            return super().validation_step(batch)
        network.train()
        try:
            return super().validation_step(batch)
        finally:
            network.eval()

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        network = _bare(self.network)
        if hasattr(network, "deep_supervision"):
            network.deep_supervision = enabled and self.deep_supervision


class nnUNetTrainerHyMamba(MambaMIMTrainer):
    """HyMamba (MambaMIM §3.1) as published; no deep supervision (it has one output)."""

    model_name = "hymamba"
    patch_multiple = 16
    deep_supervision = False


class nnUNetTrainerSegMamba(MambaMIMTrainer):
    """Taming Mambas' SegMamba on the plan's residual U-Net, with nnU-Net's deep supervision."""

    model_name = "segmamba"


class nnUNetTrainerBiSegMamba(MambaMIMTrainer):
    """Taming Mambas' BiSegMamba (bidirectional scans)."""

    model_name = "bisegmamba"


class nnUNetTrainerMultiSegMamba(MambaMIMTrainer):
    """Taming Mambas' MultiSegMamba (bidirectional scans along several axis orders)."""

    model_name = "multisegmamba"


class nnUNetTrainerSegMambaSkip(MambaMIMTrainer):
    """Taming Mambas' SegMambaSkip (Mamba outputs feed only the skips)."""

    model_name = "segmambaskip"
