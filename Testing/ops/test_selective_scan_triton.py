"""Triton selective-scan backend: kernels checked under Triton's interpreter (in a fresh process), selection
rules and errors, and that nothing needs Triton unless the Triton backend is used."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mambamim.ops import ENV_VAR, backend_report, backends, causal_conv1d_fn, selective_scan_fn
from mambamim.ops.backends import resolve_backend

CHECKS = Path(__file__).resolve().parents[1] / "triton_interpreter" / "interpreted_scan_checks.py"


def _triton_path() -> str:
    """Where the child finds Triton: this environment, or the folder ``make triton-site`` fills (kept out
    of this process: torch imports an installed triton, whose LLVM crashes beside Mesa's)."""
    site = os.environ.get("MAMBAMIM_TRITON_SITE", "")
    if site and (Path(site) / "triton").is_dir():
        return site
    if importlib.util.find_spec("triton") is not None:  # found, not imported
        return ""
    pytest.skip("triton is not installed here and MAMBAMIM_TRITON_SITE names no folder holding it")


@pytest.mark.slow
def test_kernels_match_float64_reference_under_the_interpreter():
    site = _triton_path()
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    env.pop(ENV_VAR, None)
    if site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]


@pytest.fixture
def triton_state(monkeypatch):
    """Set whether the Triton scan and the mamba-ssm kernels 'import', without touching the real ones."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)

    def set_state(triton_ok: bool, mamba_ok: bool = False) -> None:
        scan = (print, "triton 9.9 importable (test)") if triton_ok else (None, "triton not usable (test)")
        kernel = (print, "kernel importable (test)") if mamba_ok else (None, "mamba-ssm not usable (test)")
        monkeypatch.setattr(backends, "triton_scan", lambda: scan)
        monkeypatch.setattr(backends, "cuda_kernel", lambda op: kernel)

    return set_state


def test_auto_prefers_mamba_ssm_then_triton_on_cuda_and_torch_on_cpu(triton_state):
    triton_state(triton_ok=True, mamba_ok=True)
    assert resolve_backend("selective_scan", on_cuda=True) == "cuda"
    triton_state(triton_ok=True, mamba_ok=False)
    assert resolve_backend("selective_scan", on_cuda=True) == "triton"
    assert resolve_backend("selective_scan", on_cuda=False) == "torch"
    assert resolve_backend("causal_conv1d", on_cuda=True) == "torch"  # no Triton conv kernel
    triton_state(triton_ok=False)
    assert resolve_backend("selective_scan", on_cuda=True) == "torch"


def test_forcing_triton_is_an_error_when_it_cannot_run(triton_state, monkeypatch):
    triton_state(triton_ok=False)
    with pytest.raises(RuntimeError, match=r"'triton' was requested but is unavailable: triton not usable"):
        resolve_backend("selective_scan", on_cuda=True, backend="triton")
    triton_state(triton_ok=True)
    with pytest.raises(RuntimeError, match=r"not on CUDA.*TRITON_INTERPRET=1"):
        resolve_backend("selective_scan", on_cuda=False, backend="triton")
    monkeypatch.setenv(ENV_VAR, "triton")
    assert resolve_backend("selective_scan", on_cuda=True) == "triton"
    assert resolve_backend("causal_conv1d", on_cuda=True) == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("selective_scan", on_cuda=False) == "triton"


def test_report_says_triton_runs_cuda_tensors(triton_state, monkeypatch):
    triton_state(triton_ok=True)
    report = backend_report()
    assert report["selective_scan"]["on_cuda"] == "triton" and report["selective_scan"]["on_cpu"] == "torch"
    assert "Triton scan" in report["selective_scan"]["reason"]
    assert report["causal_conv1d"]["on_cuda"] == "torch"
    monkeypatch.setenv(ENV_VAR, "triton")
    report = backend_report()
    assert report["selective_scan"]["on_cpu"].startswith("error")
    assert report["causal_conv1d"]["on_cpu"] == "torch"
    assert "no Triton kernel" in report["causal_conv1d"]["reason"]


def test_everything_runs_without_triton(monkeypatch):
    """Importing and running mambamim never needs Triton; forcing it says why it cannot run."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now raises ImportError
    monkeypatch.delitem(sys.modules, "mambamim.ops.selective_scan_triton", raising=False)
    backends.triton_scan.cache_clear()
    try:
        u, delta = torch.randn(1, 2, 5), torch.rand(1, 2, 5)
        A, B, C = -torch.rand(2, 3), torch.randn(1, 3, 5), torch.randn(1, 3, 5)
        assert selective_scan_fn(u, delta, A, B, C).shape == (1, 2, 5)
        assert causal_conv1d_fn(u, torch.randn(2, 4)).shape == (1, 2, 5)
        report = backend_report()
        assert "triton not usable" in report["selective_scan"]["reason"]
        with pytest.raises(RuntimeError, match="'triton' was requested but is unavailable: triton not"):
            selective_scan_fn(u, delta, A, B, C, backend="triton")
    finally:
        backends.triton_scan.cache_clear()
