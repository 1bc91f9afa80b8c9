"""``--resume`` with a larger ``--epochs``: continue a run past its planned end instead of ignoring it.

The warm-up/cosine schedule is a pure function of the step and the run's length (``engine.schedule``),
so an extended run follows the cosine stretched to the new length from the current step on: the
learning rate rises again from where the old schedule had brought it. That is said in one line.
Fewer epochs than planned is refused: the schedule the run was trained under would change behind it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from mambamim.errors import InvalidInput


def extend_epochs(
    config: Any, payload: dict[str, Any], epochs: int | None, report: Callable[[str], None]
) -> Any:
    """``config`` of a resumed run with ``epochs`` (the user's ``--epochs``; None or equal: unchanged)."""
    if epochs is None or epochs == config.epochs:
        return config
    done = int(payload.get("epoch", 0))
    if epochs < config.epochs:
        raise InvalidInput(
            f"--epochs {epochs} with --resume: the run was planned for {config.epochs} epochs ({done} done); "
            f"a resumed run can only be extended (--epochs above {config.epochs}), or start a new run"
        )
    report(
        f"extending the run from {config.epochs} to {epochs} epochs ({done} done): the learning-rate "
        "schedule is stretched to the new length, so the rate rises again from here"
    )
    return dataclasses.replace(config, epochs=epochs)
