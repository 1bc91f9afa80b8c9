"""CPU defaults of `segment`: window batch, thread count from the free cores, and their benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mambamim.infer import defaults

ROOT = Path(__file__).resolve().parents[2]


def test_thread_count_follows_the_free_cores():
    assert defaults.auto_threads(physical=4, free=0.2) == 1  # a busy machine: one thread, never zero
    assert defaults.auto_threads(physical=4, free=2.6) == 3
    assert defaults.auto_threads(physical=4, free=7.9) == 4  # hyper-threads free: still one per core
    assert 0.0 <= defaults.free_cores(0.05) <= (torch.get_num_threads() * 4 or 1024)


def test_user_choice_wins_and_the_batch_defaults(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert defaults.apply_cpu_threads(None) is None  # the user's OMP_NUM_THREADS is left alone
        assert defaults.apply_cpu_threads(2) == 2 and torch.get_num_threads() == 2  # --threads 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(defaults, "free_cores", lambda sample_s=0.25: 0.0)
        assert defaults.apply_cpu_threads(None) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert defaults.default_sw_batch("cpu") == 2 and defaults.default_sw_batch("cuda") == 4


@pytest.mark.slow
def test_benchmark_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "cpu.json"
    script = ROOT / "Testing" / "benchmarks" / "bench_cpu_defaults.py"
    argv = [sys.executable, str(script), "--spacing", "9", "--batches", "1", "2", "--threads", "1", "0"]
    proc = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    (condition,) = result["conditions"]
    assert {(r["threads"], r["batch"]) for r in condition["runs"]} == {(1, 1), (1, 2), (0, 1), (0, 2)}
    assert min(r["slowdown_vs_best"] for r in condition["runs"]) == 1.0
    assert all(r["threads_used"][0] >= 1 for r in condition["runs"])
    assert result["robust"]["batch"] in (1, 2) and "most robust" in proc.stdout
