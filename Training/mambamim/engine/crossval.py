"""K-fold cross-validation in one command, resumable fold by fold, with nnU-Net's summary table.

Each fold is an ordinary fine-tuning run in ``OUTPUT/fold_K`` (same seeded split as ``--fold K``).
A fold whose ``validation_metrics.json`` exists is finished and skipped; a fold with a ``last.pt`` but
no metrics was interrupted (or stopped before its evaluation) and resumes from it. After every fold
the best weights are scored on that fold's validation cases, per case and per class: Dice and
Normalized Surface Dice (MONAI ``compute_surface_dice``, Nikolov et al. 2021) at a tolerance in mm.
``summary.json`` / ``summary.csv`` then give, per class, the mean ± sample standard deviation over
every validation case of every fold (cases where the class is absent from the reference are left
out, as in the training-time validation), nnU-Net's ``summary.json`` in spirit.

Scores are computed on the training grid (the run's ``--spacing``), where validation runs; they
measure agreement with the reference labels, which is all a cross-validation can.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mambamim.engine.setup import write_json_atomic
from mambamim.errors import InvalidInput

METRICS_FILE = "validation_metrics.json"
SUMMARY_COLUMNS = ("class", "cases", "dice_mean", "dice_sd", "nsd_mean", "nsd_sd")


@dataclass
class CrossvalResult:
    status: str  # "completed" | "interrupted"
    output_dir: Path
    summary: dict[str, Any] | None


def fold_dir(output_dir: Path, fold: int) -> Path:
    return output_dir / f"fold_{fold}"


def run_crossval(
    config: Any,
    output_dir: str | os.PathLike,
    device: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    show_bar: bool = True,
    nsd_tolerance_mm: float = 2.0,
) -> CrossvalResult:
    """Train and score every fold of ``config.folds`` (``config.fold`` is ignored), then summarise."""
    from mambamim.engine.finetune import run_finetune
    from mambamim.engine.setup import stderr_report

    if nsd_tolerance_mm <= 0:
        raise InvalidInput(f"--nsd-tolerance must be > 0 mm, got {nsd_tolerance_mm}")
    output_dir = Path(output_dir)
    report = stderr_report(True)
    config = dataclasses.replace(config, split="kfold", fold=0)
    config.validate()
    for fold in range(config.folds):
        where = fold_dir(output_dir, fold)
        if (where / METRICS_FILE).is_file() and not overwrite:
            report(f"fold {fold}/{config.folds}: finished earlier ({where / METRICS_FILE}), skipped")
            continue
        resume = "auto" if (where / "last.pt").is_file() and not overwrite else None
        report(f"fold {fold}/{config.folds}: " + ("resuming" if resume else "training") + f" in {where}")
        result = run_finetune(
            dataclasses.replace(config, fold=fold), where, resume=resume, device=device, workers=workers,
            overwrite=overwrite, show_bar=show_bar,
        )  # fmt: skip
        if result.status != "completed":
            report(f"fold {fold} interrupted; run the same command again to continue it")
            return CrossvalResult(result.status, output_dir, None)
        evaluate_fold(where, nsd_tolerance_mm, device)
    summary = summarise(output_dir, config.folds, nsd_tolerance_mm)
    return CrossvalResult("completed", output_dir, summary)


def _checkpoint(where: Path) -> Path:
    best = where / "best.pt"
    return best if best.is_file() else where / "last.pt"


@torch.no_grad()
def evaluate_fold(where: Path, nsd_tolerance_mm: float, device: str = "auto") -> dict[str, Any]:
    """Score the fold's best weights on its validation cases; writes ``where/validation_metrics.json``."""
    from monai.inferers import sliding_window_inference

    from mambamim.checkpoint import load_checkpoint
    from mambamim.data.dataset import VolumeDataset
    from mambamim.data.progress_bars import terminal_bar
    from mambamim.data.transforms import validation_transforms
    from mambamim.engine.finetune import FINETUNE_FORMAT, FinetuneConfig, dataset_split, label_table
    from mambamim.engine.setup import config_from_dict
    from mambamim.nn import build_model

    source = _checkpoint(where)
    payload = load_checkpoint(source, expected_format=FINETUNE_FORMAT)
    config = config_from_dict(FinetuneConfig, payload["config"]["training"], source)
    labels = payload["config"].get("labels") or label_table(config)
    _, val_items, split_how = dataset_split(config)
    run_device = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    model = build_model(payload["config"]["model_name"], **payload["config"]["model_config"])
    model.load_state_dict({k.removeprefix("module."): v for k, v in payload["model"].items()})
    model.to(run_device).eval()
    roi = (config.roi,) * 3
    dataset = VolumeDataset(
        val_items, validation_transforms(config.spacing, config.intensity, roi), cache=False
    )
    cases = []
    for index in terminal_bar(range(len(dataset)), f"scoring {where.name}", "case"):
        item = dataset[index]
        logits = sliding_window_inference(
            item["image"][None].to(run_device), roi, config.sw_batch, model, overlap=config.overlap,
            mode="gaussian",
        )  # fmt: skip
        prediction = logits.float().argmax(1, keepdim=True).cpu()
        dice, nsd = case_scores(
            prediction, item["label"][None].long(), labels, config.spacing, nsd_tolerance_mm
        )
        cases.append({"image": dataset.items[index]["image"], "label": dataset.items[index]["label"],
                      "dice": dice, "nsd": nsd})  # fmt: skip
    content = {
        "fold": config.fold, "folds": config.folds, "checkpoint": source.name, "validation": split_how,
        "spacing_mm": list(config.spacing), "nsd_tolerance_mm": nsd_tolerance_mm,
        "labels": [{"value": e["value"], "name": e["name"]} for e in labels], "cases": cases,
    }  # fmt: skip
    write_json_atomic(where / METRICS_FILE, content)
    return content


def case_scores(
    prediction: torch.Tensor,
    reference: torch.Tensor,
    labels: list[dict[str, Any]],
    spacing: list[float],
    tolerance_mm: float,
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Per-class Dice and NSD of one case (label maps ``(1, 1, X, Y, Z)``); None where the class is absent
    from the reference."""
    from monai.metrics import compute_dice, compute_surface_dice

    values = [int(e["value"]) for e in labels]
    pred = torch.cat([prediction == v for v in values], dim=1).float()
    ref = torch.cat([reference == v for v in values], dim=1).float()
    dice = compute_dice(pred, ref, include_background=True, ignore_empty=True)[0]
    with warnings.catch_warnings():  # classes absent from a case are expected; they score None below
        warnings.filterwarnings("ignore", message=".* is all 0", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        nsd = compute_surface_dice(
            pred, ref, class_thresholds=[tolerance_mm] * len(values), include_background=True,
            spacing=[float(s) for s in spacing],
        )[0]  # fmt: skip
    present = ref.flatten(2).amax(-1)[0] > 0
    dice_out: dict[str, float | None] = {}
    nsd_out: dict[str, float | None] = {}
    for i, entry in enumerate(labels):
        dice_out[entry["name"]] = float(dice[i]) if present[i] else None
        nsd_out[entry["name"]] = float(nsd[i]) if present[i] else None
    return dice_out, nsd_out


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summarise(output_dir: Path, folds: int, nsd_tolerance_mm: float) -> dict[str, Any]:
    """``summary.json`` / ``summary.csv`` over all folds' validation cases, and the table printed."""
    from mambamim.data.imageio import write_csv

    per_fold = []
    for fold in range(folds):
        path = fold_dir(output_dir, fold) / METRICS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"fold {fold} has no {path}; run the cross-validation to the end first")
        per_fold.append(json.loads(path.read_text(encoding="utf-8")))
    names = [entry["name"] for entry in per_fold[0]["labels"]]
    rows = []
    for name in names:
        dice = [c["dice"][name] for f in per_fold for c in f["cases"] if c["dice"].get(name) is not None]
        nsd = [c["nsd"][name] for f in per_fold for c in f["cases"] if c["nsd"].get(name) is not None]
        (dice_mean, dice_sd), (nsd_mean, nsd_sd) = _mean_sd(dice), _mean_sd(nsd)
        rows.append({"class": name, "cases": len(dice), "dice_mean": dice_mean, "dice_sd": dice_sd,
                     "nsd_mean": nsd_mean, "nsd_sd": nsd_sd})  # fmt: skip
    scored = [r for r in rows if r["dice_mean"] is not None]
    mean_row = {
        "class": "mean (over classes)",
        "cases": sum(len(f["cases"]) for f in per_fold),
        "dice_mean": statistics.fmean(r["dice_mean"] for r in scored) if scored else None,
        "dice_sd": None,
        "nsd_mean": statistics.fmean(r["nsd_mean"] for r in scored) if scored else None,
        "nsd_sd": None,
    }
    fold_means = []
    for f in per_fold:
        case_means = [
            statistics.fmean(v for v in c["dice"].values() if v is not None)
            for c in f["cases"]
            if any(v is not None for v in c["dice"].values())
        ]
        fold_means.append(statistics.fmean(case_means) if case_means else None)
    summary = {
        "folds": folds, "nsd_tolerance_mm": nsd_tolerance_mm, "spacing_mm": per_fold[0]["spacing_mm"],
        "note": "per class: mean ± sample sd over the validation cases of all folds where the class is in "
        "the reference; scored on the training grid",
        "classes": rows, "mean": mean_row, "fold_mean_dice": fold_means,
        "cases": [{"fold": f["fold"], **c} for f in per_fold for c in f["cases"]],
    }  # fmt: skip
    write_json_atomic(output_dir / "summary.json", summary)
    formatted = [{k: _fmt(v) for k, v in row.items()} for row in [*rows, mean_row]]
    write_csv(output_dir / "summary.csv", SUMMARY_COLUMNS, formatted, overwrite=True)
    print(format_table(rows, mean_row, summary))
    return summary


def _fmt(value: Any) -> Any:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else value


def _pm(mean: float | None, sd: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def format_table(rows: list[dict[str, Any]], mean_row: dict[str, Any], summary: dict[str, Any]) -> str:
    width = max(len(r["class"]) for r in [*rows, mean_row])
    lines = [
        f"{summary['folds']}-fold cross-validation: Dice and NSD (tolerance {summary['nsd_tolerance_mm']} "
        "mm), mean ± sd over validation cases",
        f"{'class':<{width}}  {'cases':>5}  {'Dice':>15}  {'NSD':>15}",
    ]
    for r in [*rows, mean_row]:
        lines.append(
            f"{r['class']:<{width}}  {r['cases']:>5}  {_pm(r['dice_mean'], r['dice_sd']):>15}  "
            f"{_pm(r['nsd_mean'], r['nsd_sd']):>15}"
        )
    return "\n".join(lines)
