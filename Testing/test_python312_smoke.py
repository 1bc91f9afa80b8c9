"""The engine on the Python that Slicer 5.10+ embeds (3.12): run by `make test312` in a Python 3.12
environment (and also in the main one). Where torch is absent there (no CPU build for 3.12 can be
installed here), it checks what Slicer without the PyTorch extension does: every engine file compiles
without warnings, every module that does not need torch imports, the command line answers, and the
headless entry scripts end with a clear error and exit status 1."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None
NEEDS_TORCH = {
    "torch", "monai", "safetensors", "einops", "scipy", "matplotlib", "tqdm", "dynamic_network_architectures",
}
# Optional extras: only the modules that use them import them (the Triton scan, the nnU-Net trainers).
OPTIONAL = {"triton", "nnunetv2"}


def _sources():
    for folder in (ROOT / "Training", ROOT / "MambaMIMSegmenter"):
        yield from sorted(folder.rglob("*.py"))


def test_every_file_compiles_without_warnings():
    """Python 3.12 turned invalid escape sequences into SyntaxWarnings (errors later)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in _sources():
            compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_engine_modules_import_or_only_miss_torch():
    import mambamim

    failures = []
    for info in pkgutil.walk_packages(mambamim.__path__, "mambamim."):
        if info.name.endswith("__main__"):  # runs the command line when imported
            continue
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing not in OPTIONAL and (HAS_TORCH or missing not in NEEDS_TORCH):
                failures.append(f"{info.name}: {exc}")
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(f"{info.name}: {exc!r}")
    assert not failures, failures
    modality = importlib.import_module("mambamim.infer.modality")  # used inside Slicer's own process
    assert modality.guess_modality([-1000.0, 0.0, 50.0] * 10) == "CT"


def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )


@pytest.mark.parametrize("command", ["", "segment", "reconstruct", "pretrain", "finetune", "package"])
def test_command_line_help(command):
    result = _run("-m", "mambamim", *([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: mambamim" in result.stdout


@pytest.mark.skipif(HAS_TORCH, reason="torch is installed here; Testing/test_entry_scripts.py hides it")
def test_headless_script_without_torch_exits_one_with_the_reason(tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}
    result = _run(
        "Training/finetune.py", "--", str(tmp_path / "dataset.json"), "-o", str(tmp_path / "o"), env=env
    )
    assert result.returncode == 1
    assert "torch" in result.stderr and "mambamim finetune failed" in result.stderr
    assert _run("Training/pretrain.py", "--", "--help", env=env).returncode == 0
