"""Which Python packages the engine needs, which are missing, and how to install them in Slicer.

The list comes from the ``mambamim`` project's own ``pyproject.toml`` (shipped with the module), so
there is one source of truth. ``torch`` is never installed here: it must come from Slicer's PyTorch
extension, which picks the build that matches the GPU driver. The CUDA-only kernels (mamba-ssm,
causal-conv1d) are offered only when PyTorch reports a CUDA device; without them the engine uses its
pure-PyTorch scan.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

NEVER_INSTALL = ("torch",)
REQUESTER = "MambaMIM Segmenter"


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def projectRequirements(pyprojectFile: Path) -> tuple[list[str], list[str]]:
    """(runtime requirements without torch, CUDA-only optional requirements) from pyproject.toml."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    project = tomllib.loads(Path(pyprojectFile).read_text(encoding="utf-8"))["project"]
    runtime = [r for r in project["dependencies"] if _canonical(_name(r)) not in NEVER_INSTALL]
    cuda = list(project.get("optional-dependencies", {}).get("cuda", []))
    return runtime, cuda


def isSatisfied(requirement: str) -> bool:
    """Installed and (when ``packaging`` is available to compare versions) in the required range."""
    try:
        installed = importlib.metadata.version(_name(requirement))
    except importlib.metadata.PackageNotFoundError:
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return True
    return Requirement(requirement).specifier.contains(installed, prereleases=True)


def cudaAvailable() -> bool:
    """True when PyTorch is installed and sees a CUDA device (imports torch only if present)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


@dataclass
class InstallPlan:
    missing: list[str]
    torchMissing: bool
    method: str  # "pip_ensure" or "pip_install"

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
        return "\n".join(lines)


def planInstall(pyprojectFile: Path, withCuda: Optional[bool] = None, namespace: Any = None) -> InstallPlan:
    runtime, cudaOnly = projectRequirements(pyprojectFile)
    wanted = list(runtime)
    if withCuda if withCuda is not None else cudaAvailable():
        wanted += cudaOnly
    method, _ = chooseInstaller(namespace)
    return InstallPlan(
        missing=[r for r in wanted if not isSatisfied(r)],
        torchMissing=importlib.util.find_spec("torch") is None,
        method=method,
    )


def slicerNamespace() -> Any:
    """``slicer`` with its packaging helpers imported (they are submodules, loaded on demand)."""
    found = {}
    for name in ("packaging", "pydeps", "util"):
        try:
            found[name] = importlib.import_module(f"slicer.{name}")
        except ImportError:
            continue
    return SimpleNamespace(**found)


def chooseInstaller(namespace: Any = None) -> tuple[str, Callable[[list[str], Callable[[int], None]], None]]:
    """``slicer.packaging.pip_ensure`` (or ``slicer.pydeps.pip_ensure``) when Slicer has it, otherwise
    ``slicer.util.pip_install`` (non-blocking when this Slicer supports ``blocking=False``). The
    returned installer is called with the requirements and a completion callback(return code)."""
    namespace = namespace if namespace is not None else slicerNamespace()
    for moduleName in ("packaging", "pydeps"):
        module = getattr(namespace, moduleName, None)
        if module is not None and hasattr(module, "pip_ensure"):

            def ensure(requirements: list[str], done: Callable[[int], None], _module=module) -> None:
                from packaging.requirements import Requirement

                # We already asked the user with the full list, so no second prompt.
                _module.pip_ensure(
                    [Requirement(r) for r in requirements],
                    skip_packages=list(NEVER_INSTALL),
                    prompt_install=False,
                    requester=REQUESTER,
                )
                done(0)

            return "pip_ensure", ensure
    util = getattr(namespace, "util", None)
    if util is None or not hasattr(util, "pip_install"):
        raise RuntimeError("this Slicer has neither pip_ensure nor pip_install; install the packages by hand")

    def install(requirements: list[str], done: Callable[[int], None]) -> None:
        # A space-separated string works with every Slicer version's pip_install.
        text = " ".join(requirements)
        if "blocking" in inspect.signature(util.pip_install).parameters:
            util.pip_install(text, blocking=False, completedCallback=done, requester=REQUESTER)
        else:
            util.pip_install(text)
            done(0)

    return "pip_install", install
