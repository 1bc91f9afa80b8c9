"""The validation figures of a model card, with the caveat of how they were obtained.

Written by ``mambamim finetune`` at the end of a run and rebuilt by ``mambamim package`` from a
checkpoint, so both cards say the same: e.g. "validation on the training scan: optimistic" stays on
the card whichever way it was packaged.
"""

from __future__ import annotations

from typing import Any


def card_metrics(extra: dict[str, Any], validation: str, epochs: int | None, steps: int) -> dict[str, Any]:
    """``extra``: a fine-tuning loop's extra state (best Dice, its epoch and metrics)."""
    metrics = extra.get("metrics") or {}
    return {
        "validation": validation,
        "mean_dice": metrics.get("mean_dice"),
        "dice": metrics.get("dice", {}),
        "best_epoch": extra.get("best_epoch"),
        "epochs": epochs,
        "steps": steps,
    }


def checkpoint_card_metrics(payload: dict[str, Any]) -> dict[str, Any]:
    """Card metrics of a fine-tuning checkpoint; checkpoints older than the stored split description
    give their bare validation metrics."""
    config = payload.get("config") or {}
    extra = payload.get("extra") or {}
    if not config.get("validation"):
        return extra.get("metrics") or {}
    epochs = (config.get("training") or {}).get("epochs")
    return card_metrics(extra, config["validation"], epochs, int(payload.get("step", 0)))
