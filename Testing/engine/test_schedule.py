"""The learning-rate schedule is MONAI's WarmupCosineSchedule, per group, and survives --resume."""

from __future__ import annotations

import math

import pytest
import torch
from mambamim.engine.schedule import GroupWarmupCosine, build_optimizer
from monai.optimizers import WarmupCosineSchedule


def optimizer(lr: float = 1.0, groups: tuple[str, ...] = ("all",)) -> torch.optim.Optimizer:
    named = {name: [(f"{name}.weight", torch.nn.Parameter(torch.ones(2, 2)))] for name in groups}
    return build_optimizer(named, lr=lr, weight_decay=0.0)


def lrs(scheduler, steps: int, group: int = 0) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[group])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def old_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """The hand-written schedule this replaced (for the documented difference)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def test_matches_monai_and_stays_within_the_documented_difference():
    warmup, total = 5, 40
    ours = lrs(GroupWarmupCosine(optimizer(), warmup, total), total)
    monai = lrs(WarmupCosineSchedule(optimizer(), warmup, total, warmup_multiplier=1 / warmup), total)
    assert ours == pytest.approx(monai, abs=1e-12)
    for step, lr in enumerate(ours):
        assert abs(lr - old_factor(step, warmup, total, 0.0)) <= 1 / warmup + 1e-9
        if step == 0 or step >= warmup:  # identical at the first step and after the warm-up
            assert lr == pytest.approx(old_factor(step, warmup, total, 0.0), abs=1e-9)
    floored = lrs(GroupWarmupCosine(optimizer(lr=2.0), 0, total, min_factor=0.01), total)
    assert min(floored) == pytest.approx(0.02)  # the floor is relative to the group's lr
    assert max(abs(a / 2.0 - old_factor(s, 0, total, 0.01)) for s, a in enumerate(floored)) <= 0.01


def test_frozen_groups_get_lr_zero_then_follow_the_schedule():
    opt = optimizer(groups=("encoder", "rest"))
    scheduler = GroupWarmupCosine(opt, 2, 10, frozen={"encoder": 3})
    encoder, rest = lrs(scheduler, 10, group=0), None
    scheduler = GroupWarmupCosine(optimizer(groups=("encoder", "rest")), 2, 10, frozen={"encoder": 3})
    rest = lrs(scheduler, 10, group=2)
    assert encoder[:3] == [0.0, 0.0, 0.0] and encoder[3:] == pytest.approx(rest[3:])
    assert all(r > 0 for r in rest)


def test_resume_restores_the_step_and_a_longer_run_stretches_the_cosine():
    first = GroupWarmupCosine(optimizer(), 2, 20)
    lrs(first, 7)
    state = first.state_dict()
    assert "t_total" not in state and state["last_epoch"] == 7
    same = GroupWarmupCosine(optimizer(), 2, 20)
    same.load_state_dict(state)
    assert same.get_last_lr() == pytest.approx(first.get_last_lr())
    assert lrs(same, 5) == pytest.approx(lrs(first, 5))
    longer = GroupWarmupCosine(optimizer(), 2, 40)  # --resume with more epochs
    longer.load_state_dict(state)
    assert longer.t_total == 40 and longer.last_epoch == 7
    longer.optimizer.step()
    longer.step()  # the next step follows the new, longer cosine
    assert longer.get_last_lr()[0] == pytest.approx(longer.lr_lambda(8))
    assert longer.lr_lambda(8) > first.lr_lambda(8)


def test_checkpoints_of_the_previous_lambdalr_still_resume():
    opt = optimizer()
    old = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: old_factor(step, 2, 20, 0.0))
    lrs(old, 6)
    resumed = GroupWarmupCosine(optimizer(), 2, 20)
    resumed.load_state_dict(old.state_dict())
    assert resumed.last_epoch == 6
    assert resumed.get_lr()[0] == pytest.approx(old_factor(6, 2, 20, 0.0))
