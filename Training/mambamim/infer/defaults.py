"""Default window batch per device, chosen from measurements (Testing/benchmarks/bench_cpu_defaults.py).

CPU: ``sw_batch_size`` 4. The issue's quiet-machine figures for the demo package on the sample CT were
31 s (batch 1) against 64 s (batch 8), but 95 s against 67 s in a second run on the same shared machine:
batch 1 is fastest only when every core is free. Our own figures (taken while the machine was shared;
the benchmark's JSON in Testing/benchmarks/results) put batch 2-4 within a few per cent of the best in
both conditions, while batch 1 lost badly when the cores were busy and batch 8 lost when they were free
(bigger activations spill the caches). A batch of 4 windows also bounds the extra memory to four
windows' activations. GPU: 4, unchanged (windows per launch amortise kernel start-up).

Threads: torch's default (one per physical core) is kept; a smaller thread count never won by more
than the noise in the measurements, and under contention the larger batch is what keeps the cores fed.
"""

from __future__ import annotations

DEFAULT_SW_BATCH = {"cpu": 4, "cuda": 4}


def default_sw_batch(device_type: str) -> int:
    """Windows per forward pass when ``--sw-batch-size`` is not given."""
    return DEFAULT_SW_BATCH.get(device_type, 1)
