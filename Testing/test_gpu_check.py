"""The one-command GPU check in its CPU form (every section's code at toy sizes), and its offline wheels."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("environment", "scan_parity", "model_parity", "bf16", "oom_fallback", "ddp", "timings")


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "Testing" / "gpu" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reduced_check_runs_every_section_and_writes_the_report(tmp_path, sample_ct):
    env = {**os.environ, "GPU_CHECK_DIR": str(tmp_path / "report"), "PYTHON": sys.executable}
    env.update(GPU_CHECK_TIMEOUT="1500")
    env.pop("TRITON_INTERPRET", None)
    script = ROOT / "Testing" / "gpu" / "check.sh"
    proc = subprocess.run(
        ["bash", str(script), "--reduced", "--budget", "1200", "--ddp-timeout", "900"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["reduced"] and report["passed"]
    assert list(report["sections"]) == list(SECTIONS)
    assert all(s["status"] == "ok" for s in report["sections"].values()), report["sections"]
    timings = report["sections"]["timings"]
    assert {r["model"] for r in timings["windows"]} == {"hymamba", "swin_unetr"}
    assert {(r["model"], r["mode"]) for r in timings["segment"]} == {
        (m, mode) for m in ("hymamba", "swin_unetr") for mode in ("normal", "fast")
    }
    assert all(r["seconds"] > 0 for r in timings["windows"] + timings["pretrain"])
    assert "out of memory" in report["sections"]["oom_fallback"]["notes"][0]
    summary = (tmp_path / "report" / "summary.txt").read_text()
    assert summary.startswith("GPU check (reduced, CPU): PASSED")


def _wheel(path: Path, module: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{module}/__init__.py", "VALUE = 42\n")
        archive.writestr(f"{module}-1.0.dist-info/top_level.txt", f"{module}\n")
    return path


def test_prepared_wheels_are_unpacked_only_when_missing(tmp_path, monkeypatch):
    check = load_check()
    monkeypatch.setattr(check, "PREPARED", tmp_path)
    (tmp_path / "wheels").mkdir()
    _wheel(tmp_path / "wheels" / "gpucheckfake-1.0-py3-none-any.whl", "gpucheckfake")
    _wheel(tmp_path / "wheels" / "json-1.0-py3-none-any.whl", "json")  # importable already: left alone
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert check.use_prepared_wheels() == ["gpucheckfake"]
    assert (tmp_path / "site" / "gpucheckfake" / "__init__.py").exists()
    assert not (tmp_path / "site" / "json").exists()
    assert sys.path[-1] == str(tmp_path / "site")
    import gpucheckfake

    assert gpucheckfake.VALUE == 42
    sys.modules.pop("gpucheckfake", None)


def test_summary_lists_failures_under_their_section():
    check = load_check()
    text = check.summary({
        "reduced": False, "seconds": 12.0, "passed": False,
        "sections": {
            "scan_parity": {"status": "failed", "seconds": 3.0, "failures": ["triton [2, 64]: forward 1e-1"]},
            "ddp": {"status": "skipped", "seconds": 0.0, "reason": "no CUDA device"},
        },
    })  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "GPU check (full): FAILED in 12.0 s"
    assert lines[1].startswith("scan_parity") and "failed" in lines[1]
    assert lines[2] == "    FAIL triton [2, 64]: forward 1e-1"
    assert "no CUDA device" in lines[3]
