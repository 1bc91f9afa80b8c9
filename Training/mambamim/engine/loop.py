"""The training loop shared by pre-training and fine-tuning.

One optimiser step per batch: bf16 autocast on CUDA, gradient clipping, warm-up/cosine schedule,
a checkpoint every epoch, every ``checkpoint_every`` steps and on Ctrl-C/SIGTERM (after the current
step), exact ``--resume``.

Guarantee: ``last.pt`` is replaced atomically, so it always holds a complete state. Ctrl-C / SIGTERM lose
nothing; a run killed outright (SIGKILL, out-of-memory killer, power loss) loses at most the steps
since the last checkpoint, i.e. one checkpoint interval, and ``--resume`` then continues to exactly
the weights an uninterrupted run reaches.

Exact resume rests on three facts: (1) data are a pure function of (seed, epoch, sample)
(``mambamim.data.dataset``), and a resumed epoch skips the samples already seen; (2) the model's own
randomness (MIM masks) comes from a generator seeded by (seed, step, rank); (3) the global torch /
numpy / python / CUDA RNG states are saved at the step boundary and restored, and the DataLoader
draws its worker seeds from its own generator, never from the global one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mambamim.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from mambamim.data.dataset import EpochSampler
from mambamim.engine.distributed import DistributedContext, any_rank, barrier, unwrap_model
from mambamim.engine.interrupt import GracefulInterrupt
from mambamim.engine.monitor import TrainingMonitor

LossFn = Callable[[nn.Module, dict, torch.Generator], torch.Tensor]


@dataclass
class LoopState:
    """Where a run is: ``step`` optimiser steps done in total, ``batch_in_epoch`` of them in ``epoch``."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. best validation Dice so far

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "extra": self.extra,
        }


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """CPU generator for the model's per-step randomness (MIM masks): same masks on any machine."""
    state = int(np.random.SeedSequence([seed, step, rank, 0x4D494D]).generate_state(1)[0])
    return torch.Generator().manual_seed(state)


@dataclass
class TrainingLoop:
    model: nn.Module  # possibly DDP-wrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ctx: DistributedContext
    dataset: torch.utils.data.Dataset
    sampler: EpochSampler
    batch_volumes: int  # volumes per loader batch (each yields num_samples crops)
    steps_per_epoch: int  # optimiser steps per epoch and process (the sampler's share / batch_volumes)
    workers: int
    epochs: int
    seed: int
    loss_fn: LossFn
    checkpoint_dir: Path
    base_payload: dict[str, Any]  # format, format_version, config
    monitor: TrainingMonitor
    grad_clip: float = 1.0
    amp: bool = True
    collate_fn: Callable | None = None
    # Called after each epoch with this loop and the state (after the epoch); returns the epoch's metrics.
    on_epoch_end: Callable[[TrainingLoop, LoopState], dict[str, Any]] | None = None
    rng_state: dict[str, Any] | None = None  # restored right before the first step of a resumed run
    checkpoint_every: int = 0  # optimiser steps between checkpoints; 0 = only at the end of each epoch

    def payload(self, state: LoopState) -> dict[str, Any]:
        return {
            **self.base_payload,
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **state.as_dict(),
            "world_size": self.ctx.world_size,
            "rng": capture_rng_state(),
        }

    def save(self, state: LoopState, name: str = "last.pt") -> None:
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_dir / name, self.payload(state))

    def _loader(self, state: LoopState) -> DataLoader:
        self.sampler.set_epoch(state.epoch, start=state.batch_in_epoch * self.batch_volumes)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_volumes,
            sampler=self.sampler,
            num_workers=self.workers,
            collate_fn=self.collate_fn,
            pin_memory=self.ctx.device.type == "cuda",
            # Worker seeds come from this generator, so building a loader never touches the global RNG.
            generator=torch.Generator().manual_seed(self.seed + state.epoch),
        )

    def _train_step(self, batch: dict, state: LoopState) -> tuple[float, int]:
        self.model.train()
        batch = {
            k: v.to(self.ctx.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
        }
        generator = step_generator(self.seed, state.step, self.ctx.rank)
        use_amp = self.amp and self.ctx.device.type == "cuda"
        with torch.autocast(device_type=self.ctx.device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = self.loss_fn(self.model, batch, generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at step {state.step + 1}; lower --lr or check the data "
                f"(last good checkpoint: {self.checkpoint_dir / 'last.pt'})"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach().float().item()), int(batch["image"].shape[0])

    def run(self, state: LoopState) -> tuple[str, LoopState]:
        """Train from ``state`` to the last epoch. Returns ("completed" | "interrupted", final state)."""
        if self.rng_state is not None:
            restore_rng_state(self.rng_state)
        with GracefulInterrupt() as interrupt:
            while state.epoch < self.epochs:
                t0 = time.perf_counter()
                for batch in self._loader(state):
                    loss, crops = self._train_step(batch, state)
                    state.step += 1
                    state.batch_in_epoch += 1
                    # Wall time per step including data loading: what throughput really is.
                    now = time.perf_counter()
                    seconds, t0 = now - t0, now
                    self.monitor.step(
                        state.step,
                        state.epoch + 1,
                        loss,
                        self.scheduler.get_last_lr()[0],
                        crops * self.ctx.world_size / max(seconds, 1e-9),
                        seconds,
                    )
                    if (
                        self.checkpoint_every
                        and state.step % self.checkpoint_every == 0
                        and state.batch_in_epoch < self.steps_per_epoch  # the epoch end saves anyway
                    ):
                        self.save(state)
                        barrier(self.ctx)
                    if any_rank(interrupt.requested, self.ctx):
                        self.save(state)
                        barrier(self.ctx)
                        self.monitor.message(
                            f"{interrupt.signal_name or 'interrupt'}: saved "
                            f"{self.checkpoint_dir / 'last.pt'} at step {state.step}; continue with --resume"
                        )
                        return "interrupted", state
                state.epoch += 1
                state.batch_in_epoch = 0
                metrics = self.on_epoch_end(self, state) if self.on_epoch_end is not None else {}
                self.monitor.epoch(state.epoch, state.step, metrics)
                self.save(state)
                barrier(self.ctx)
        return "completed", state
