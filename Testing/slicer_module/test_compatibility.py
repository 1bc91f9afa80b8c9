"""Supported Slicer releases (5.10+, Python 3.12) are stated everywhere, and an older Slicer gets one
clear message: the compatibility check must itself run on Slicer 5.8's Python 3.9."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from MambaMIMSegmenterLib.compatibility import SUPPORTED_TEXT, parseVersion, unsupportedReason

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "MambaMIMSegmenter"
PYTHON39 = os.environ.get("PYTHON39", "/root/.pyenv/versions/3.9.18/bin/python")  # Slicer 5.8's Python


@pytest.mark.parametrize(
    "version, python, supported",
    [
        ("5.6.2", (3, 9), False),
        ("5.8.1", (3, 9), False),
        ("5.10.0", (3, 12), True),
        ("5.12.1", (3, 12), True),
        ("5.13.0-2026-02-01", (3, 12), True),
        ("5.10.0", (3, 9), False),
        ("", (3, 12), False),
    ],
)
def test_supported_releases(version, python, supported):
    reason = unsupportedReason(version, python)
    assert (reason is None) == supported
    if not supported:
        assert "Slicer 5.10 or newer" in reason


def test_version_parsing():
    assert parseVersion("5.12.1") == (5, 12) and parseVersion("garbage") == (0, 0)


def test_stated_in_readme_help_text_and_catalog():
    readme = (ROOT / "README.md").read_text()
    assert "Slicer 5.10 or newer" in readme and "5.6 or newer" not in readme
    module = (MODULE_DIR / "MambaMIMSegmenter.py").read_text()
    assert "compatibility.SUPPORTED_TEXT" in module and SUPPORTED_TEXT == "Slicer 5.10 or newer"
    assert "unsupportedReason(slicer.app.applicationVersion)" in module
    entry = json.loads((ROOT / "MambaMIMSegmenter.json").read_text())
    assert entry["scm_revision"] == "main"  # the index's main branch builds Slicer 5.10+


@pytest.mark.skipif(not Path(PYTHON39).exists(), reason="no Python 3.9 (Slicer 5.8's) on this machine")
def test_old_slicer_python_gets_the_message_not_a_syntax_error():
    files = [MODULE_DIR / "MambaMIMSegmenter.py", *sorted((MODULE_DIR / "MambaMIMSegmenterLib").glob("*.py"))]
    subprocess.run([PYTHON39, "-m", "py_compile", *map(str, files)], check=True, timeout=120)
    library = str(MODULE_DIR / "MambaMIMSegmenterLib")
    code = f"import sys; sys.path.insert(0, {library!r}); import compatibility as c; "
    code += "print(c.unsupportedReason('5.8.1'))"
    run = subprocess.run([PYTHON39, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    out = run.stdout
    assert "needs Slicer 5.10 or newer" in out and "Python 3.9" in out


# The public names of Base/Python/slicer/util.py that the module uses, as defined (def/class at module
# level) in both v5.10.0 and v5.12.0 of Slicer's source; pip_install is there in both, with different
# signatures (see slicer_releases.py). Anything else the module calls on slicer.util would be imaginary.
SLICER_UTIL_5_10_AND_5_12 = {
    "WaitCursor",
    "VTKObservationMixin",
    "addVolumeFromArray",
    "arrayFromSegmentBinaryLabelmap",
    "childWidgetVariables",
    "confirmOkCancelDisplay",
    "errorDisplay",
    "infoDisplay",
    "loadUI",
    "pip_install",
    "tryWithErrorDisplay",
    "warningDisplay",
}


def test_the_module_calls_only_slicer_util_functions_that_exist_in_5_10_and_5_12():
    import re

    used = set()
    for path in MODULE_DIR.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"slicer\.util\.([A-Za-z_]\w*)", text))
        for names in re.findall(r"from slicer\.util import ([\w, ]+)", text):
            used |= {n.strip() for n in names.split(",")}
    assert used and used <= SLICER_UTIL_5_10_AND_5_12, sorted(used - SLICER_UTIL_5_10_AND_5_12)
