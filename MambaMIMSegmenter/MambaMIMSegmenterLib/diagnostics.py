"""The text behind the Diagnostics button: everything a bug report needs, in one paste.

The engine's side (torch, CUDA, GPU, scan backend, package versions) is collected by the same Python
that runs inference, in a child process that answers in the progress protocol, so the GUI never
imports torch and the report shows what the engine really sees.
"""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

from .tasks import ProbeTask

ENGINE_PROBE = r"""
import importlib, importlib.metadata as md, json, platform, sys
info = {"engine python": sys.version.split()[0], "engine executable": sys.executable}
for name in ("mambamim", "torch", "monai", "numpy", "SimpleITK", "nibabel", "mamba-ssm", "causal-conv1d"):
    try:
        info[name] = md.version(name)
    except md.PackageNotFoundError:
        try:
            info[name] = getattr(importlib.import_module(name), "__version__", "present")
        except Exception:
            info[name] = "not installed"
try:
    import torch
    info["CUDA available"] = str(torch.cuda.is_available())
    info["CUDA version"] = str(torch.version.cuda)
    if torch.cuda.is_available():
        info["GPU"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
except Exception as exc:
    info["torch error"] = repr(exc)
try:
    from mambamim.ops import backend_report
    info["scan backend"] = json.dumps(backend_report(), default=str)
except Exception as exc:
    info["scan backend"] = "unavailable: " + repr(exc)
done = {"stage": "done", "fraction": 1.0, "eta_s": None, "message": "", "outputs": info}
print(json.dumps(done), flush=True)
"""


def localInfo(slicerVersion: str = "") -> dict[str, str]:
    return {
        "Slicer": slicerVersion or "(not running inside Slicer)",
        "Python": sys.version.split()[0],
        "Python executable": sys.executable,
        "OS": platform.platform(),
    }


def formatDiagnostics(local: dict[str, Any], engine: dict[str, Any], engineError: str = "") -> str:
    lines = ["MambaMIM Segmenter diagnostics", ""]
    lines += [f"{key}: {value}" for key, value in local.items()]
    lines.append("")
    if engine:
        lines += [f"{key}: {value}" for key, value in engine.items()]
    if engineError:
        lines.append(f"engine probe failed: {engineError}")
    return "\n".join(lines)


def parseProbe(outputs: dict[str, str]) -> dict[str, Any]:
    """The probe's outputs, with the JSON scan-backend report expanded one level."""
    engine: dict[str, Any] = dict(outputs)
    try:
        report = json.loads(engine.get("scan backend", ""))
    except ValueError:
        return engine
    if isinstance(report, dict):
        engine["scan backend"] = ", ".join(f"{k}={v}" for k, v in report.items())
    return engine


def startDiagnostics(python: str, env: dict[str, str]) -> ProbeTask:
    """Run the probe with the engine's interpreter; the task's result is the engine's information."""
    return ProbeTask([python, "-c", ENGINE_PROBE], env, parseProbe, "Collecting diagnostics…")


def diagnosticsText(task: ProbeTask, slicerVersion: str) -> str:
    """The report for a finished probe task, also when the probe failed (then with its error)."""
    engine = task.result if task.error is None else {}
    error = "" if task.error is None else str(task.error)
    return formatDiagnostics(localInfo(slicerVersion), engine or {}, error)
