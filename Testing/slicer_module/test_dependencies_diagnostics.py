"""Dependency planning / installer choice, and the Diagnostics text from a real engine probe."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from MambaMIMSegmenterLib import dependencies, diagnostics
from MambaMIMSegmenterLib.logic import defaultEnginePaths
from MambaMIMSegmenterLib.runner import ProcessRunner, engineEnvironment

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def test_requirements_come_from_pyproject_and_never_include_torch():
    runtime, cuda = dependencies.projectRequirements(PYPROJECT)
    names = [dependencies._canonical(dependencies._name(r)) for r in runtime]
    assert "torch" not in names
    assert {"monai", "simpleitk", "safetensors"} <= set(names)
    assert [dependencies._name(r) for r in cuda] == ["mamba-ssm", "causal-conv1d"]


def test_mamba_ssm_is_offered_only_with_cuda():
    without = dependencies.planInstall(
        PYPROJECT, withCuda=False, namespace=SimpleNamespace(util=SimpleNamespace(pip_install=print))
    )
    with_cuda = dependencies.planInstall(
        PYPROJECT, withCuda=True, namespace=SimpleNamespace(util=SimpleNamespace(pip_install=print))
    )
    assert not any("mamba-ssm" in r for r in without.missing)
    assert any("mamba-ssm" in r for r in with_cuda.missing)  # not installed on this CPU machine
    # Everything else the engine needs is installed in the test environment.
    assert [r for r in without.missing] == []
    assert not without.needed
    text = with_cuda.confirmationText()
    assert "mamba-ssm" in text and "torch" not in text.lower().replace("pytorch", "")


def test_satisfied_checks_versions():
    assert dependencies.isSatisfied("numpy>=1.0")
    assert not dependencies.isSatisfied("numpy<1.0")
    assert not dependencies.isSatisfied("surely-not-an-installed-package-h7")


def test_installer_prefers_pip_ensure_and_falls_back_to_pip_install():
    calls = []

    class PyDeps:
        @staticmethod
        def pip_ensure(requirements, **kwargs):
            calls.append(("pip_ensure", [str(r) for r in requirements], kwargs))

    method, install = dependencies.chooseInstaller(SimpleNamespace(pydeps=PyDeps, util=None))
    assert method == "pip_ensure"
    done = []
    install(["monai>=1.3"], done.append)
    assert calls[0][1] == ["monai>=1.3"] and calls[0][2]["skip_packages"] == ["torch"]
    assert calls[0][2]["prompt_install"] is False and done == [0]

    def pip_install(requirements, blocking=True, completedCallback=None, requester=None):
        calls.append(("pip_install", requirements, blocking))
        completedCallback(0)

    method, install = dependencies.chooseInstaller(
        SimpleNamespace(util=SimpleNamespace(pip_install=pip_install))
    )
    assert method == "pip_install"
    install(["scipy>=1.10"], done.append)
    assert calls[-1] == ("pip_install", "scipy>=1.10", False)  # never blocks the GUI when it can
    with pytest.raises(RuntimeError, match="neither pip_ensure nor pip_install"):
        dependencies.chooseInstaller(SimpleNamespace())


def test_diagnostics_probe_reports_engine_versions():
    runner = ProcessRunner(
        [sys.executable, "-c", diagnostics.ENGINE_PROBE], env=engineEnvironment(defaultEnginePaths())
    )
    runner.start()
    runner.wait(timeout=120)
    engine = diagnostics.parseProbe(runner.result().outputs)
    import torch

    assert engine["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert engine["CUDA available"] == str(torch.cuda.is_available())
    assert engine["mamba-ssm"] == "not installed" or engine["mamba-ssm"]
    text = diagnostics.formatDiagnostics(diagnostics.localInfo("5.8.1"), engine)
    for needle in ("Slicer: 5.8.1", "Python:", "torch:", "CUDA available:", "scan backend:", "mambamim:"):
        assert needle in text
