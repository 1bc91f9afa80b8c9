"""Training progress for people and files: a tqdm bar (loss, crops/s, ETA), CSV logs, ``progress.png``,
TensorBoard.

Only rank 0 creates a monitor that does anything; other ranks get a disabled one, so the loops call
it unconditionally.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any, ClassVar

from mambamim.engine.progress_plot import ProgressPlot
from mambamim.safe_write import safe_write

TENSORBOARD_NOTICE = (
    "note: TensorBoard is not installed (pip install tensorboard); curves go to {out_dir}/progress.png "
    "and the CSV logs"
)


class CsvLog:
    """Append-only CSV with a fixed header; on resume, rows past the resumed step are dropped."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None = None) -> None:
        self.path, self.columns = path, columns
        if resume_step is not None and path.is_file():
            self._truncate_after(resume_step)
        if not path.is_file():
            with safe_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(columns)

    def _truncate_after(self, step: int) -> None:
        # Rows written after the last checkpoint belong to steps the resumed run will redo.
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.DictReader(f) if int(float(row.get("step") or 0)) <= step]
        with safe_write(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(
                {k: _fmt(v) for k, v in row.items()}
            )


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


class TrainingMonitor:
    """Per-step bar + ``train_log.csv``; per-epoch ``epochs.csv``; TensorBoard scalars when installed."""

    STEP_COLUMNS: ClassVar[list[str]] = ["step", "epoch", "loss", "lr", "crops_per_s", "elapsed_s"]

    def __init__(
        self,
        out_dir: Path,
        total_steps: int,
        start_step: int,
        enabled: bool,
        epoch_columns: list[str],
        resumed: bool = False,
        show_bar: bool = True,
    ) -> None:
        self.enabled = enabled
        self._bar = None
        self._tb = None
        self._plot = None
        if not enabled:
            return
        self._plot = ProgressPlot(out_dir)
        resume_step = start_step if resumed else None
        self.steps = CsvLog(out_dir / "train_log.csv", self.STEP_COLUMNS, resume_step)
        self.epochs = CsvLog(out_dir / "epochs.csv", ["epoch", "step", *epoch_columns], resume_step)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=start_step)
        except ImportError:  # tensorboard is optional
            self._tb = None
            print(TENSORBOARD_NOTICE.format(out_dir=out_dir), file=sys.stderr, flush=True)
        if show_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_steps,
                initial=start_step,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                desc="training",
            )

    def step(
        self, step: int, epoch: int, loss: float, lr: float, crops_per_s: float, elapsed_s: float
    ) -> None:
        if not self.enabled:
            return
        self.steps.write(
            {
                "step": step,
                "epoch": epoch,
                "loss": loss,
                "lr": lr,
                "crops_per_s": crops_per_s,
                "elapsed_s": elapsed_s,
            }
        )
        self._plot.pending = True
        if self._tb is not None:
            self._tb.add_scalar("train/loss", loss, step)
            self._tb.add_scalar("train/lr", lr, step)
        if self._bar is not None:
            self._bar.set_postfix(
                epoch=epoch, loss=f"{loss:.4f}", crops_s=f"{crops_per_s:.2f}", refresh=False
            )
            self._bar.update(1)

    def epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.epochs.write({"epoch": epoch, "step": step, **metrics})
        if self._tb is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"epoch/{name}", value, step)
        self._plot.update()

    def message(self, text: str) -> None:
        """A line on stderr that does not break the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._plot is not None:
            self._plot.update(force=True)
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
