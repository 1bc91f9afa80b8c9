"""Progress bars for the slow loops before and between training steps (caching volumes, validation).

Shown on a terminal only (tqdm's ``disable=None``), so logs and captured output stay clean; the bar
disappears when done (``leave=False``), leaving the training bar and the run's messages.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def terminal_bar(items: Iterable[T], desc: str, unit: str, enabled: bool | None = None) -> Iterator[T]:
    """``items`` with a bar on stderr when it is a terminal (``enabled=None``), always or never."""
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                    disable=None if enabled is None else not enabled)  # fmt: skip
