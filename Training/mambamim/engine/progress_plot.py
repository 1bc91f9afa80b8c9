"""``progress.png``: training curves redrawn from the run's CSV logs after each epoch (nnU-Net's
``progress.png``): loss per step with its per-epoch mean, learning rate, and validation Dice (fine-tuning)
or mean loss per epoch (pre-training).

Drawn from ``train_log.csv`` and ``epochs.csv`` rather than from memory, so a resumed run's figure
shows the whole run. Redrawing costs a fraction of a second, so it happens at most every
``min_interval_s`` seconds (and always at the end of a run); the file is replaced atomically.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

from mambamim.safe_write import safe_write

PROGRESS_FILE = "progress.png"


def _read_columns(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for name in rows[0].keys() if rows else ():
        values = []
        for row in rows:
            try:
                values.append(float(row[name]))
            except (TypeError, ValueError):
                values.append(math.nan)
        columns[name] = values
    return columns


def write_progress_plot(out_dir: Path) -> Path | None:
    """Draw ``out_dir/progress.png`` from the logs; None when no step has been logged yet."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = _read_columns(out_dir / "train_log.csv")
    epochs = _read_columns(out_dir / "epochs.csv")
    if not steps.get("step"):
        return None
    figure = Figure(figsize=(9, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, lr_ax, epoch_ax = figure.subplots(3, 1, sharex=True)
    loss_ax.plot(steps["step"], steps["loss"], lw=0.6, alpha=0.5, label="loss per step")
    if epochs.get("step") and "mean_loss" in epochs:
        loss_ax.plot(epochs["step"], epochs["mean_loss"], "o-", label="mean loss per epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(loc="upper right")
    lr_ax.plot(steps["step"], steps["lr"], color="tab:green")
    lr_ax.set_ylabel("learning rate")
    dice = {k: v for k, v in epochs.items() if k.startswith("dice_")}
    if "mean_dice" in epochs:
        epoch_ax.plot(epochs["step"], epochs["mean_dice"], "o-", color="black", lw=2, label="mean Dice")
        for name, values in dice.items():
            epoch_ax.plot(epochs["step"], values, lw=0.8, alpha=0.7, label=name.removeprefix("dice_"))
        epoch_ax.set_ylabel("validation Dice")
        epoch_ax.set_ylim(-0.02, 1.02)
        if len(dice) <= 14:
            epoch_ax.legend(loc="lower right", fontsize="small", ncols=2)
    else:
        epoch_ax.set_visible(False)
    (epoch_ax if epoch_ax.get_visible() else lr_ax).set_xlabel("optimiser step")
    done = int(steps["step"][-1])
    figure.suptitle(f"{out_dir.name}: step {done}, epoch {int(steps['epoch'][-1])}")
    path = out_dir / PROGRESS_FILE
    with safe_write(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


class ProgressPlot:
    """Redraws ``progress.png`` after an epoch, at most every ``min_interval_s`` seconds;
    ``update(force=True)`` (the end of a run) draws what is still ``pending`` (steps since the last one)."""

    def __init__(self, out_dir: Path, min_interval_s: float = 10.0) -> None:
        self.out_dir, self.min_interval_s = out_dir, min_interval_s
        self.pending = False
        self._last = -math.inf

    def update(self, force: bool = False) -> None:
        if not self.pending or (not force and time.monotonic() - self._last < self.min_interval_s):
            return
        write_progress_plot(self.out_dir)
        self.pending = False
        self._last = time.monotonic()
