"""Training/pretrain.py and finetune.py end every run with an exit status, as Slicer's
``--python-script`` needs: Slicer (v5.10.0, Base/QTCore/qSlicerCoreApplication.cxx) sets ``sys.argv``
to the script and the arguments left after its own options, runs the file in ``__main__``, and exits
only on ``SystemExit``; anything else leaves ``Slicer --no-main-window`` running forever."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [ROOT / "Training" / "pretrain.py", ROOT / "Training" / "finetune.py"]


def run_like_slicer(script: Path, args: list[str]) -> int:
    """Execute the file as Slicer does; the SystemExit code, or fail when it would hang Slicer."""
    saved = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return exc.code
    finally:
        sys.argv = saved
    pytest.fail(f"{script.name} returned without SystemExit: Slicer would keep running")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_after_double_dash_exits_zero(script, capsys):
    assert run_like_slicer(script, ["--", "--help"]) == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "error, status",
    [
        (TypeError("a bug"), 1),
        (ModuleNotFoundError("No module named 'torch'"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_any_exception_becomes_an_exit_status(monkeypatch, capsys, error, status):
    import mambamim.cli

    def fail(argv):
        raise error

    monkeypatch.setattr(mambamim.cli, "main", fail)
    assert run_like_slicer(SCRIPTS[0], ["data", "-o", "out"]) == status
    if status == 1:
        assert "mambamim pretrain failed" in capsys.readouterr().err


def test_bad_arguments_exit_two():
    assert run_like_slicer(SCRIPTS[1], ["--no-such-option"]) == 2


def test_missing_torch_in_a_real_process_exits_one(tmp_path):
    """A Python without torch (a Slicer before the PyTorch extension installed it)."""
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ModuleNotFoundError('No module named torch', name='torch')\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPTS[0]), "--", str(tmp_path), "-o", str(tmp_path / "out")],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "torch" in result.stderr and "mambamim pretrain failed" in result.stderr
