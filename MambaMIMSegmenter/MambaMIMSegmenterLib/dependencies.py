"""Which Python packages the engine needs, which are missing, and how to install them in Slicer.

The list comes from the ``mambamim`` project's own ``pyproject.toml`` (shipped with the module), so
there is one source of truth. What is installed is asked of the engine's interpreter (a child
process reading package metadata), never by importing torch in Slicer's own process.

``torch`` is never installed here: it comes from Slicer's PyTorch extension, which picks the build
that matches the GPU driver, and every install passes pip a constraints file pinning the installed
torch version, so no dependency can make pip replace it.

Slicer's install API differs between the supported releases (read from Slicer's source):

- 5.10: ``slicer.util.pip_install(requirements)``: blocking, a string or a list of pip arguments,
  raises ``CalledProcessError`` on failure; constraints go in as ``-c FILE``.
- 5.12 and newer: ``slicer.packaging.pip_install(requirements, constraints=None, ..., blocking=True,
  show_progress=True, requester=None, ..., completedCallback=None)`` (``slicer.util.pip_install`` only
  forwards ``**kwargs`` to it). We call it with ``blocking=False`` and a completion callback. Its
  ``skip_packages`` (per-package ``--no-deps``, discouraged by Slicer) and the modal ``pip_ensure``
  are not used.

The CUDA-only kernels (mamba-ssm, causal-conv1d) are never part of this plan: they are an optional
speed-up, offered separately (:func:`cudaKernelRequirements`), and the engine runs its pure-PyTorch
scan on CUDA without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tasks import ProbeTask

NEVER_INSTALL = ("torch",)
REQUESTER = "MambaMIM Segmenter"

CUDA_KERNELS_HELP = (
    "mamba-ssm and causal-conv1d are optional CUDA kernels that make the selective scan faster on "
    "an NVIDIA GPU. Segmentation works without them (the engine uses its pure-PyTorch scan, also on "
    "the GPU). They have no ready-made packages: pip compiles them from source, which needs the CUDA "
    "toolkit's compiler (nvcc) matching your PyTorch build, a C++ compiler, and often 10-30 minutes."
)


def requirementName(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]


def canonicalName(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def projectRequirements(pyprojectFile: Path) -> tuple[list[str], list[str]]:
    """(runtime requirements without torch, CUDA-only optional requirements) from pyproject.toml."""
    import tomllib  # Python 3.11+: every supported Slicer (5.10+ embeds Python 3.12)

    project = tomllib.loads(Path(pyprojectFile).read_text(encoding="utf-8"))["project"]
    runtime = [r for r in project["dependencies"] if canonicalName(requirementName(r)) not in NEVER_INSTALL]
    cuda = list(project.get("optional-dependencies", {}).get("cuda", []))
    return runtime, cuda


def satisfiedBy(requirement: str, installed: str | None) -> bool:
    """Whether an installed version (None: not installed) satisfies ``requirement``."""
    if not installed:
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:  # without packaging, presence is all we can check
        return True
    return Requirement(requirement).specifier.contains(installed, prereleases=True)


# Run by the engine's interpreter: the installed versions of the packages named in argv (metadata
# only: nothing is imported), answered as one line of the progress protocol.
VERSION_PROBE = r"""
import importlib.metadata as md, json, sys
versions = {}
for name in sys.argv[1:]:
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        versions[name] = ""
print(json.dumps({"stage": "done", "fraction": 1.0, "message": "", "outputs": versions}), flush=True)
"""


@dataclass
class InstallPlan:
    missing: list[str]
    torchVersion: str | None  # None: torch is not installed for the engine

    @property
    def torchMissing(self) -> bool:
        return not self.torchVersion

    @property
    def needed(self) -> bool:
        return bool(self.missing) or self.torchMissing

    def confirmationText(self) -> str:
        lines = []
        if self.torchMissing:
            lines.append(
                "PyTorch is not installed. Install the PyTorch extension (Extension Manager) and use its "
                "module to install the build for your GPU, then restart Slicer."
            )
        if self.missing:
            lines.append("MambaMIM Segmenter needs these Python packages, which will be installed now:")
            lines.extend(f"  • {requirement}" for requirement in self.missing)
            lines.append(f"PyTorch {self.torchVersion} stays as it is.")
        return "\n".join(lines)


def planFromVersions(requirements: Sequence[str], installed: dict[str, str]) -> InstallPlan:
    """The plan for ``requirements`` given ``{name: version or ""}`` as the engine reported it."""
    versions = {canonicalName(name): version for name, version in installed.items()}
    missing = [r for r in requirements if not satisfiedBy(r, versions.get(canonicalName(requirementName(r))))]
    return InstallPlan(missing=missing, torchVersion=versions.get("torch") or None)


def startDependencyCheck(python: str, env: dict[str, str], pyprojectFile: Path) -> ProbeTask:
    """Ask the engine's interpreter which requirements are installed; the task's result is the plan."""
    runtime, _ = projectRequirements(pyprojectFile)
    names = ["torch", *(requirementName(r) for r in runtime)]
    return ProbeTask(
        [python, "-c", VERSION_PROBE, *names],
        env,
        lambda outputs: planFromVersions(runtime, outputs),
        "Checking the Python packages…",
    )


def engineNotReady(python: str, env: dict[str, str], pyprojectFile: Path) -> str | None:
    """Why the engine cannot run here (torch or its packages missing), or None when it can. For the
    module's self-test, which must skip (not fail) on build servers without PyTorch."""
    try:
        plan = startDependencyCheck(python, env, pyprojectFile).wait(timeout=120)
    except Exception as exc:
        return f"the engine's Python could not be asked which packages it has: {exc}"
    if plan.torchMissing:
        return "PyTorch is not installed (install it with the PyTorch extension)"
    if plan.missing:
        return "the engine's Python packages are missing: " + ", ".join(plan.missing)
    return None


def cudaKernelRequirements(pyprojectFile: Path) -> list[str]:
    """pip arguments for the optional CUDA kernels: they build against the installed torch, so pip must
    not build them in an isolated environment (which would download another torch)."""
    _, cuda = projectRequirements(pyprojectFile)
    return ["--no-build-isolation", *cuda]


def findCudaCompiler() -> str | None:
    """nvcc on PATH or under CUDA_HOME / CUDA_PATH; None when the kernels cannot be built here."""
    import os

    found = shutil.which("nvcc")
    if found:
        return found
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(variable)
        for name in ("nvcc", "nvcc.exe"):
            if root and (Path(root) / "bin" / name).is_file():
                return str(Path(root) / "bin" / name)
    return None


def writeConstraints(folder: Path, torchVersion: str) -> Path:
    """A pip constraints file pinning the installed torch, so no requirement can replace it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="mambamim-constraints-", suffix=".txt", dir=folder)
    with open(handle, "w", encoding="utf-8") as stream:
        stream.write(f"torch=={torchVersion}\n")
    return Path(name)


def slicerNamespace() -> Any:
    """``slicer`` with its install helpers imported (``slicer.packaging`` exists from 5.12)."""
    import importlib
    from types import SimpleNamespace

    found = {}
    for name in ("packaging", "util"):
        try:
            found[name] = importlib.import_module(f"slicer.{name}")
        except ImportError:
            continue
    return SimpleNamespace(**found)


class InstallBusy(RuntimeError):
    """Another pip install started by Slicer is still running."""


class InstallTask:
    """One pip install through Slicer's API, in the task protocol (poll, cancel, fraction, status)."""

    fraction: float | None = None
    cancellable = False  # Slicer's API cannot stop pip once started

    def __init__(self, description: str):
        self.statusText = description
        self.returnCode: int | None = None
        self.error: BaseException | None = None
        self.result = None
        self._packaging: Any = None

    def poll(self) -> bool:
        if self.returnCode is None and self._packaging is not None:
            if not self._packaging.isPipInstallInProgress():
                # Slicer installed in blocking mode (testing mode, no main window): it returned only
                # once pip had succeeded, without calling back.
                self._completed(0)
        return self.returnCode is not None

    def cancel(self) -> None:
        """pip cannot be stopped safely half-way; the install continues and is simply not awaited."""

    def _completed(self, returnCode: int) -> None:
        if self.returnCode is not None:
            return
        self.returnCode = int(returnCode)
        self._packaging = None
        if self.returnCode != 0:
            self.error = RuntimeError(
                f"pip exited with code {self.returnCode}; its output is in the Python console"
            )


def startInstall(
    arguments: Sequence[str],
    constraintsFile: Path,
    namespace: Any = None,
    description: str = "Installing Python packages…",
) -> InstallTask:
    """Start ``pip install ARGUMENTS -c CONSTRAINTS`` the way this Slicer release supports."""
    namespace = namespace if namespace is not None else slicerNamespace()
    task = InstallTask(description)
    packaging = getattr(namespace, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_install"):  # Slicer 5.12+
        if packaging.isPipInstallInProgress():
            raise InstallBusy("another Python package installation is still running; wait for it to finish")
        try:
            packaging.pip_install(
                list(arguments),
                constraints=str(constraintsFile),
                blocking=False,
                show_progress=True,
                requester=REQUESTER,
                completedCallback=task._completed,
            )
        except subprocess.CalledProcessError as exc:  # the blocking fallbacks raise on failure
            task._completed(exc.returncode or 1)
            return task
        if task.returnCode is None:
            task._packaging = packaging
        return task
    util = getattr(namespace, "util", None)
    if util is None or not hasattr(util, "pip_install"):
        raise RuntimeError("this Slicer has no slicer.util.pip_install; install the packages by hand")
    # Slicer 5.10: blocking; a list is passed to pip as separate arguments (paths with spaces stay whole).
    try:
        util.pip_install(["-c", str(constraintsFile), *arguments])
    except subprocess.CalledProcessError as exc:
        task._completed(exc.returncode or 1)
    else:
        task._completed(0)
    return task

