"""The CPU window-policy benchmark runs end to end on a coarse grid and writes its JSON (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_writes_agreement_and_runs(tmp_path, sample_ct):
    out = tmp_path / "policy.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "Testing" / "benchmarks" / "bench_cpu_policy.py"), "--spacing", "6",
         "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert set(result["runs"]) == {"card", "large"}
    for policy, run in result["runs"].items():
        assert run["windows"]["policy"] == policy and run["windows"]["count"] >= 1
        assert run["wall_s"] > 0 and run["voxel_evaluations"] > 0
    assert result["runs"]["large"]["windows"]["overlap"] == 0.25
    assert result["agreement"] and all(0.0 <= d <= 1.0 for d in result["agreement"].values())
    assert result["meets_threshold"] == (min(result["agreement"].values()) >= 0.98)
    assert "min agreement" in proc.stdout
