"""CPU defaults of `segment`, chosen from measurements (Testing/benchmarks/bench_cpu_defaults.py).

The issue's figures for the demo package on the sample CT (3 mm, 27 windows of 64³): 31 s at window
batch 1 against 64 s at batch 8 with the cores free, but 95 s against 67 s, and 366 s against 76 s for
a tiny model, when the machine was shared. Our figures were measured while the 2-core machine was
shared with two training runs and other jobs (load average 6.5; median of 2, round-robin; JSON in
Testing/benchmarks/results/cpu_defaults_busy.json):

- threads: with 2 threads every batch took 215-340 s; with 1 thread 19-25 s. When other processes
  hold the cores, each of torch's worker threads waits for the slowest at every operator's barrier,
  so one thread per *free* core, not per core, is what matters (the "likely cause" the issue names);
- window batch, at 1 thread: 1 -> 25 s (19-32 s: fragile), 2 -> 18.7 s, 4 -> 20.4 s, 8 -> 22.6 s;
  with the cores free, larger batches lose (batch 8 took twice batch 1's time in the issue's run).

So the CPU default batch is 2 (best here and next to batch 1 on a free machine) and the thread count
is the number of cores not already busy, sampled for a quarter of a second before the run (at least 1,
at most the physical cores); ``OMP_NUM_THREADS`` or ``--threads`` set by the user win. On the quiet
machine (cpu_defaults_quiet.json, demo 0.4.0) the automatic threads at batch 2 took 13.9 s, the best
setting with 2 threads at batch 2 (13.8 s); batch 1 15.5 s, batch 8 15.4 s, 1 thread 21-28 s. GPU: 4
windows per launch, unchanged.
"""

from __future__ import annotations

import math
import os

DEFAULT_SW_BATCH = {"cpu": 2, "cuda": 4}
LOAD_SAMPLE_S = 0.25


def default_sw_batch(device_type: str) -> int:
    """Windows per forward pass when ``--sw-batch-size`` is not given."""
    return DEFAULT_SW_BATCH.get(device_type, 1)


def free_cores(sample_s: float = LOAD_SAMPLE_S) -> float:
    """Cores (logical) not used by other processes, from the system-wide CPU use over ``sample_s``."""
    import psutil

    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    busy = psutil.cpu_percent(interval=sample_s) / 100.0 * logical
    return max(logical - busy, 0.0)


def auto_threads(physical: int | None = None, free: float | None = None) -> int:
    """Torch CPU threads: the free cores (rounded), at least 1, at most the physical cores."""
    import psutil

    cores = physical or psutil.cpu_count(logical=False) or os.cpu_count() or 1
    free = free_cores() if free is None else free
    return int(min(cores, max(1, math.floor(free + 0.5))))


def apply_cpu_threads(requested: int | None) -> int | None:
    """Set torch's CPU threads: ``requested`` if given, else :func:`auto_threads` unless ``OMP_NUM_THREADS``
    is set (the user's choice). Returns the count set, or None when left alone."""
    import torch

    if requested is None and os.environ.get("OMP_NUM_THREADS"):
        return None
    threads = int(requested) if requested else auto_threads()
    torch.set_num_threads(threads)
    return threads
