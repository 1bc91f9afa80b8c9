"""`mambamim web` without the [web] extra: one clear line, no traceback, and mambamim stays free of
Slicer, VTK and trame imports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


@pytest.mark.skipif(importlib.util.find_spec("trame_slicer") is not None, reason="the web extra is installed")
def test_web_without_the_extra_says_how_to_install_it():
    result = subprocess.run(
        [sys.executable, "-m", "mambamim", "web"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[web]"' in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_the_web_command_parses_without_importing_the_front_end():
    code = (
        "import sys; from mambamim.cli import build_parser; "
        "a = build_parser().parse_args(['web', '--port', '0']); "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('slicer', 'vtk', 'vtkmodules', 'trame', 'trame_slicer', 'MambaMIMSegmenterWeb', 'qt', 'PySide6')]; "
        "print(a.host, a.port, bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["127.0.0.1", "0", "[]"]
