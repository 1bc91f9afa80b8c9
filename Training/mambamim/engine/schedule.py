"""AdamW with linear warm-up then cosine decay (MONAI's ``WarmupCosineSchedule``), per parameter group.

The schedule is a function of the optimiser step only, so its state is the step count and restores
exactly on ``--resume``; its shape (warm-up, total steps, floor) comes from the run's config, never from
the checkpoint, so a resumed run with more epochs stretches the cosine instead of keeping the old one.

Compared with the hand-written ``LambdaLR`` used before (checkpoints of either restore into the other):
the warm-up starts at ``1/warmup_steps`` of the lr and rises linearly as MONAI's does
(``m + (1 - m)·step/warmup`` with ``m = 1/warmup``; before, ``(step + 1)/warmup``: at most
``1/warmup`` apart, equal at the first step and after the warm-up); the floor is MONAI's ``end_lr``, a
clamp ``max(min_factor, cosine)`` per group, where before the cosine was squeezed into
``[min_factor, 1]`` (identical for the fine-tuning default ``min_factor = 0``; for pre-training's 0.01 the
lr differs by at most 1 % of the peak).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.optimizers import WarmupCosineSchedule
from torch import nn

# Shape of the schedule: from the run's config, not restored from a checkpoint.
_CONFIGURED = (
    "warmup_steps", "t_total", "cycles", "end_lr", "warmup_multiplier", "min_factor", "frozen_steps",
)  # fmt: skip


class GroupWarmupCosine(WarmupCosineSchedule):
    """MONAI's warm-up + cosine, with a floor relative to each group's lr and per-group frozen steps.

    ``frozen``: ``{"encoder": N}`` gives the groups named ``encoder/...`` an lr of 0 for the first N
    steps (a frozen-encoder warm-up). With lr 0 AdamW leaves the parameters bit-for-bit unchanged (its
    decoupled weight decay is scaled by the lr too), and unlike ``requires_grad=False`` this does not
    upset DistributedDataParallel.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_factor: float = 0.0,
        frozen: Mapping[str, int] | None = None,
    ) -> None:
        self.min_factor = float(min_factor)
        frozen = frozen or {}
        groups = [g.get("name", "").split("/")[0] for g in optimizer.param_groups]
        self.frozen_steps = [int(frozen.get(name, 0)) for name in groups]
        super().__init__(
            optimizer,
            warmup_steps=warmup_steps,
            t_total=total_steps,
            warmup_multiplier=1.0 / warmup_steps if warmup_steps > 0 else 0.0,
        )

    def factor(self, step: int, group: int = 0) -> float:
        """The lr multiplier of parameter group ``group`` at optimiser step ``step``."""
        if step < self.frozen_steps[group]:
            return 0.0
        return max(self.min_factor, self.lr_lambda(step))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch, i) for i, base in enumerate(self.base_lrs)]

    def state_dict(self) -> dict:
        state = super().state_dict()
        for key in _CONFIGURED:
            state.pop(key, None)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in _CONFIGURED})


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights, learnable tokens and SSM parameters (A_log, D) are not decayed."""
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim <= 1 or leaf in ("A_log", "D", "A_b_log", "D_b") or "token" in leaf


def build_optimizer(
    groups: dict[str, list[tuple[str, nn.Parameter]]], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW over named parameter groups (e.g. ``{"encoder": [...], "rest": [...]}``), each split by decay.

    Parameter groups come out in a fixed order, ``<group>/decay`` then ``<group>/no_decay``, which
    the scheduler's per-group factors rely on.
    """
    param_groups = []
    for name, named_params in groups.items():
        decay = [p for n, p in named_params if p.requires_grad and not no_weight_decay(n, p)]
        no_decay = [p for n, p in named_params if p.requires_grad and no_weight_decay(n, p)]
        param_groups.append({"params": decay, "weight_decay": weight_decay, "name": f"{name}/decay"})
        param_groups.append({"params": no_decay, "weight_decay": 0.0, "name": f"{name}/no_decay"})
    return torch.optim.AdamW(param_groups, lr=lr)
