"""Volume dataset and sampler whose random crops are a pure function of (seed, epoch, sample).

Why not MONAI's CacheDataset + DistributedSampler: exact ``--resume`` needs the batch of step *s* to be
identical whether or not the run was interrupted, whatever the number of loader workers. Here the
sampler yields ``(epoch, index)`` pairs and the dataset seeds the random transforms from them, so no
state lives in worker processes and a resumed run simply skips the samples it has already seen.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import numpy as np
import torch
from monai.transforms import Compose
from torch.utils.data import Dataset, Sampler

from mambamim.data.progress_bars import terminal_bar
from mambamim.errors import InvalidInput, MambaMIMError


class NoReadableScansError(MambaMIMError, RuntimeError):
    """Raised when none of the given scans can be read; the message lists every file and its error."""


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Independent 32-bit seed for one (epoch, sample) of a run."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class VolumeDataset(Dataset):
    """Items ``{"image": path, ...}`` -> deterministic transform (cached) -> seeded random transform.

    Unreadable files are reported through ``report`` and skipped, never crashing a run: with
    ``cache=True`` (default) every volume is loaded up front, so problems show before training starts;
    without a cache a failing volume is replaced by the next readable one at load time.
    """

    def __init__(
        self,
        items: Sequence[dict],
        deterministic: Compose,
        random: Compose | None = None,
        seed: int = 0,
        cache: bool = True,
        report: Callable[[str], None] = print,
    ) -> None:
        self.deterministic = deterministic
        self.random = random
        self.seed = seed
        self.report = report
        self.skipped: dict[str, str] = {}
        self.items = list(items)
        self._cache: list[dict] | None = None
        if cache:
            # A file listed twice (e.g. in two dataset lists) is loaded once and shared.
            volumes: dict[str, dict | None] = {}
            for item in terminal_bar(self.items, "caching volumes", "volume"):
                key = json.dumps(item, sort_keys=True, default=str)
                if key not in volumes:
                    volumes[key] = self._try_load(item)
            loaded = [(item, volumes[json.dumps(item, sort_keys=True, default=str)]) for item in self.items]
            self.items = [item for item, volume in loaded if volume is not None]
            self._cache = [volume for _, volume in loaded if volume is not None]
        if not self.items:
            self._raise_empty(items)

    def _raise_empty(self, items: Sequence[dict]) -> NoReturn:
        details = "\n".join(f"  {path}: {error}" for path, error in self.skipped.items())
        raise NoReadableScansError(
            f"none of the {len(items)} scan(s) could be read" + (f":\n{details}" if details else "")
        )

    def _try_load(self, item: dict) -> dict | None:
        try:
            return self.deterministic(dict(item))
        except Exception as exc:  # any reader/transform failure means "skip this file", by design
            cause = exc.__cause__ or exc
            message = f"{type(cause).__name__}: {cause}".splitlines()[0]
            name = str(item.get("image"))
            if name not in self.skipped:
                self.skipped[name] = message
                self.report(f"skipping unreadable scan {name}: {message}")
            return None

    def _volume(self, index: int) -> dict:
        if self._cache is not None:
            return self._cache[index]
        for offset in range(len(self.items)):
            volume = self._try_load(self.items[(index + offset) % len(self.items)])
            if volume is not None:
                return volume
        self._raise_empty(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        volume = self._volume(index)
        if self.random is None:
            return dict(volume)
        self.random.set_random_state(seed=sample_seed(self.seed, epoch, index))
        return self.random(dict(volume))


class EpochSampler(Sampler):
    """Shuffled, rank-sharded ``(epoch, index)`` pairs; ``start`` skips samples already trained on.

    Same sharding as ``torch.utils.data.DistributedSampler`` (pad by repeating, then ``rank::world``),
    with the permutation drawn from ``seed + epoch`` so every rank agrees without communication.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if size < 1:
            raise InvalidInput("cannot sample from an empty dataset")
        self.size, self.rank, self.world_size = size, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(size / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.size))[:total]
        for index in order[self.rank :: self.world_size][self.start :]:
            yield self.epoch, index
