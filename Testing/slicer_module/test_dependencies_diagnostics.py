"""Dependency check (asked of the engine's interpreter), installs through the API of each supported
Slicer release (stand-ins from Slicer's source, see slicer_releases.py), and the Diagnostics text."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import slicer_releases
from conftest import ENGINE_PYTHON
from MambaMIMSegmenterLib import dependencies, diagnostics
from MambaMIMSegmenterLib.logic import defaultEnginePaths
from MambaMIMSegmenterLib.runner import engineEnvironment
from MambaMIMSegmenterLib.tasks import TaskBusy, TaskSlot

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"

def _engine_torch() -> str:
    code = "import importlib.metadata as m; print(m.version('torch'))"
    run = subprocess.run([ENGINE_PYTHON, "-c", code], capture_output=True, text=True, check=True)
    return run.stdout.strip()


TORCH = _engine_torch()


def test_requirements_come_from_pyproject_and_never_include_torch():
    runtime, cuda = dependencies.projectRequirements(PYPROJECT)
    names = [dependencies.canonicalName(dependencies.requirementName(r)) for r in runtime]
    assert "torch" not in names
    assert {"monai", "simpleitk", "safetensors"} <= set(names)
    assert [dependencies.requirementName(r) for r in cuda] == ["mamba-ssm", "causal-conv1d"]


def test_the_engine_interpreter_answers_without_importing_torch_in_this_process(tmp_path):
    """Defect 8: the check runs in the engine's interpreter; defect 1: never lists the CUDA kernels."""
    before = set(sys.modules)
    env = engineEnvironment(defaultEnginePaths())
    env["PYTHONPATH"] = str(tmp_path) + ":" + env.get("PYTHONPATH", "")
    # The engine's interpreter has torch, but not one of our requirements (hidden for this child).
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.metadata as md\n"
        "_version = md.version\n"
        "def version(name):\n"
        "    if name == 'einops':\n"
        "        raise md.PackageNotFoundError(name)\n"
        "    return _version(name)\n"
        "md.version = version\n"
    )
    plan = dependencies.startDependencyCheck(ENGINE_PYTHON, env, PYPROJECT).wait(timeout=120)
    assert plan.torchVersion == TORCH and not plan.torchMissing
    assert [dependencies.requirementName(r) for r in plan.missing] == ["einops"]
    assert not any("mamba" in r or "causal" in r for r in plan.missing), "CUDA kernels are optional"
    assert "torch" not in set(sys.modules) - before
    assert "PyTorch 2" in plan.confirmationText() and "einops" in plan.confirmationText()


def test_plan_without_torch_and_with_versions():
    plan = dependencies.planFromVersions(["numpy>=1.24", "monai>=1.3"], {"numpy": "1.20", "monai": "1.4"})
    assert plan.missing == ["numpy>=1.24"] and plan.torchMissing
    assert "PyTorch extension" in plan.confirmationText()
    assert not dependencies.planFromVersions(["monai>=1.3"], {"monai": "1.4", "torch": "2.5"}).needed


def test_slicer_510_blocking_pip_install_with_the_torch_constraint(tmp_path):
    standIn = slicer_releases.slicer_510()
    constraints = dependencies.writeConstraints(tmp_path / "with space", TORCH)
    assert constraints.read_text() == f"torch=={TORCH}\n"
    task = dependencies.startInstall(["packaging", "numpy>=1.24"], constraints, standIn)
    assert task.poll() and task.error is None
    assert standIn.util.commands == [["install", "-c", str(constraints), "packaging", "numpy>=1.24"]]
    # A failing pip (here: a requirement that cannot be met) is reported, not raised.
    task = dependencies.startInstall(["surely-not-a-package-h7"], constraints, standIn)
    assert task.poll() and task.returnCode != 0 and "pip exited" in str(task.error)


def test_slicer_512_non_blocking_install_one_at_a_time(tmp_path):
    standIn = slicer_releases.slicer_512()
    constraints = dependencies.writeConstraints(tmp_path, TORCH)
    task = dependencies.startInstall(["numpy>=1.24"], constraints, standIn)
    call = standIn.packaging.commands[-1]
    assert call == ["install", "numpy>=1.24", "-c", str(constraints)]
    assert not task.poll(), "non-blocking: the GUI keeps running while pip works"
    # A second click while pip runs: the module's slot refuses it, and so would Slicer.
    slot = TaskSlot()
    slot.start("install", task, lambda t: None)
    with pytest.raises(TaskBusy, match="install"):
        slot.start("segment", dependencies.InstallTask("x"), lambda t: None)
    with pytest.raises(dependencies.InstallBusy):
        dependencies.startInstall(["numpy"], constraints, standIn)
    assert slot.cancel() is None, "pip cannot be cancelled half-way: the task stays"
    standIn.packaging.processEvents()
    assert slot.poll() and task.returnCode == 0 and task.error is None
    assert standIn.packaging.ensureCalls == 0


def test_slicer_512_testing_mode_installs_blocking_without_callback(tmp_path):
    standIn = slicer_releases.slicer_512(testing=True)
    task = dependencies.startInstall(["numpy>=1.24"], dependencies.writeConstraints(tmp_path, TORCH), standIn)
    assert task.poll() and task.returnCode == 0


def test_calls_bind_to_the_real_signatures(tmp_path):
    """Every keyword the module passes exists in the release's signature (none is imaginary)."""
    standIn = slicer_releases.slicer_512()
    calls = []
    real = standIn.packaging.pip_install

    def spy(*args, **kwargs):
        inspect.signature(real).bind(*args, **kwargs)
        calls.append(kwargs)
        return real(*args, **kwargs)

    standIn.packaging.pip_install = spy
    dependencies.startInstall(["numpy>=1.24"], dependencies.writeConstraints(tmp_path, TORCH), standIn)
    standIn.packaging.processEvents()
    assert calls[0]["blocking"] is False and "skip_packages" not in calls[0]
    assert list(inspect.signature(slicer_releases.Slicer510Util.pip_install).parameters) == [
        "self",
        "requirements",
    ]


def test_cuda_kernels_are_offered_separately_with_what_they_need():
    arguments = dependencies.cudaKernelRequirements(PYPROJECT)
    assert arguments[0] == "--no-build-isolation"
    assert [dependencies.requirementName(a) for a in arguments[1:]] == ["mamba-ssm", "causal-conv1d"]
    assert "nvcc" in dependencies.CUDA_KERNELS_HELP and "without them" in dependencies.CUDA_KERNELS_HELP


def test_no_reference_to_slicer_pydeps():
    for path in (ROOT / "MambaMIMSegmenter").rglob("*.py"):
        assert "pydeps" not in path.read_text(encoding="utf-8"), path
    assert "pydeps" not in (ROOT / "README.md").read_text(encoding="utf-8")


def test_constraints_file_is_accepted_by_pip(tmp_path):
    constraints = dependencies.writeConstraints(tmp_path, TORCH)
    pip = [ENGINE_PYTHON, "-m", "pip", "install", "--dry-run", "--no-index", "-q"]
    result = subprocess.run(
        [*pip, "-c", str(constraints), "torch"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_diagnostics_probe_reports_engine_versions():
    task = diagnostics.startDiagnostics(ENGINE_PYTHON, engineEnvironment(defaultEnginePaths()))
    engine = task.wait(timeout=120)
    assert engine["torch"] == TORCH
    assert engine["CUDA available"] in ("True", "False")
    assert engine["mamba-ssm"] == "not installed" or engine["mamba-ssm"]
    text = diagnostics.diagnosticsText(task, "5.10.0")
    for needle in ("Slicer: 5.10.0", "Python:", "torch:", "CUDA available:", "scan backend:", "mambamim:"):
        assert needle in text


def test_diagnostics_of_a_broken_engine_still_reports_this_side():
    from MambaMIMSegmenterLib.tasks import ProbeTask

    task = ProbeTask([sys.executable, "-c", "import sys; sys.exit(3)"], None, diagnostics.parseProbe, "")
    with pytest.raises(Exception, match="exit code 3"):
        task.wait(timeout=60)
    text = diagnostics.diagnosticsText(task, "5.12.1")
    assert "Slicer: 5.12.1" in text and "engine probe failed" in text and "exit code 3" in text


def test_self_test_skip_reason_where_torch_is_absent(tmp_path):
    """The module's self-test asks this before running a model: skip (with why) on a build server."""
    env = engineEnvironment(defaultEnginePaths())
    assert dependencies.engineNotReady(ENGINE_PYTHON, env, PYPROJECT) is None
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.metadata as md\n"
        "_version = md.version\n"
        "def version(name):\n"
        "    if name == 'torch':\n"
        "        raise md.PackageNotFoundError(name)\n"
        "    return _version(name)\n"
        "md.version = version\n"
    )
    env["PYTHONPATH"] = str(tmp_path) + ":" + env["PYTHONPATH"]
    assert "PyTorch is not installed" in dependencies.engineNotReady(ENGINE_PYTHON, env, PYPROJECT)
    reason = dependencies.engineNotReady(str(tmp_path / "missing-python"), env, PYPROJECT)
    assert "could not be asked" in reason
