"""AdamW with linear warm-up then cosine decay, per parameter group.

The schedule is a function of the optimiser step only (``LambdaLR``), so its state is two integers
and restores exactly on ``--resume``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def warmup_cosine(warmup_steps: int, total_steps: int, min_factor: float = 0.0) -> Callable[[int], float]:
    """lr factor: linear 1/w .. 1 over ``warmup_steps``, then cosine to ``min_factor`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def frozen_until(steps: int, schedule: Callable[[int], float]) -> Callable[[int], float]:
    """``schedule`` with a factor of 0 for the first ``steps`` steps (frozen-encoder warm-up).

    With lr 0 AdamW leaves the parameters bit-for-bit unchanged (its decoupled weight decay is scaled
    by the lr too), and unlike ``requires_grad=False`` this does not upset DistributedDataParallel.
    """

    def factor(step: int) -> float:
        return 0.0 if step < steps else schedule(step)

    return factor


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


def build_scheduler(
    optimizer: torch.optim.Optimizer, factors: dict[str, Callable[[int], float]]
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with the factor of each group name (``"encoder"`` matches ``encoder/decay`` ...)."""
    lambdas = [factors[group["name"].split("/")[0]] for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
