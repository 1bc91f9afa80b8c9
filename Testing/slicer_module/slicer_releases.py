"""Stand-ins for Slicer's package-install API, written from Slicer's source at the release tags.

Each keeps the exact signature of the release it names and its behaviour as far as it matters here
(how the pip command line is built, blocking or not, when the callback runs, what raises); the
actual ``pip install`` runs for real in this interpreter with ``--dry-run --no-index``, so pip itself
checks our arguments and constraints without touching the environment or the network.

- ``Slicer510Util``: ``Base/Python/slicer/util.py`` at v5.10.0 — ``pip_install(requirements)``: a
  string is split with ``shlex``, a list is passed as pip arguments; ``_executePythonModule`` runs
  ``PythonSlicer -m pip install ...`` and raises ``CalledProcessError`` on failure (blocking).
  There is no ``slicer.packaging`` in 5.10.
- ``Slicer512Packaging``: ``Base/Python/slicer/packaging.py`` at v5.12.0 (unchanged in what is used
  here up to v5.12.3) — ``pip_install(requirements, constraints=None, no_deps_requirements=None,
  skip_packages=None, blocking=True, show_progress=True, requester=None, parent=None,
  logCallback=None, completedCallback=None)``; ``_build_pip_args`` appends ``-c CONSTRAINTS``;
  non-blocking mode sets ``_pip_install_in_progress`` until the QProcess finishes and then calls
  ``completedCallback(returnCode)`` on the main thread; a second non-blocking call meanwhile raises
  ``RuntimeError``; ``skip_packages`` with ``blocking=False`` raises ``ValueError``. In testing mode
  (``slicer.app.testingEnabled()``) it installs blocking, without calling back.
  ``pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True,
  prompt_restart=True, requester=None, skip_in_testing=True, show_progress=True)`` is modal.
  ``slicer.util.pip_install`` in 5.12 is ``pip_install(requirements, **kwargs)``, forwarding to it.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from types import SimpleNamespace

DRY_RUN = ["--dry-run", "--no-index", "--disable-pip-version-check", "-q"]


def _run_pip(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pip", *args[:1], *DRY_RUN, *args[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class Slicer510Util:
    """``slicer.util`` of Slicer 5.10.0 (install part)."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def pip_install(self, requirements):
        if type(requirements) == str:  # noqa: E721 (as in Slicer)
            args = "install", *(shlex.split(requirements))
        elif type(requirements) == list:  # noqa: E721
            args = "install", *requirements
        else:
            raise ValueError("pip_install requirement input must be string or list")
        self._executePythonModule("pip", list(args))

    def _executePythonModule(self, module, args):
        self.commands.append(list(args))
        process = _run_pip(list(args))
        output, _ = process.communicate(timeout=300)
        if process.returncode != 0:
            raise subprocess.CalledProcessError(process.returncode, args, output=output)


class Slicer512Packaging:
    """``slicer.packaging`` of Slicer 5.12.0 (the functions the module may touch)."""

    def __init__(self, testing: bool = False) -> None:
        self.testing = testing
        self.commands: list[list[str]] = []
        self._pip_install_in_progress = False
        self._pending: list[tuple[subprocess.Popen, object]] = []
        self.ensureCalls = 0

    def isPipInstallInProgress(self) -> bool:
        return self._pip_install_in_progress

    def pip_ensure(
        self,
        requirements,
        constraints=None,
        skip_packages=None,
        prompt_install=True,
        prompt_restart=True,
        requester=None,
        skip_in_testing=True,
        show_progress=True,
    ):
        self.ensureCalls += 1
        raise AssertionError("pip_ensure is modal: the module must not use it")

    def pip_install(
        self,
        requirements,
        constraints=None,
        no_deps_requirements=None,
        skip_packages=None,
        blocking=True,
        show_progress=True,
        requester=None,
        parent=None,
        logCallback=None,
        completedCallback=None,
    ):
        if skip_packages is not None:
            if no_deps_requirements is not None:
                raise ValueError("skip_packages and no_deps_requirements are mutually exclusive.")
            if not blocking:
                raise ValueError("skip_packages requires blocking=True.")
        if self.testing:
            self._blocking(self._build_pip_args(requirements, constraints))
            return None
        if not blocking and self._pip_install_in_progress:
            raise RuntimeError("A non-blocking pip_install is already in progress.")
        args = self._build_pip_args(requirements, constraints)
        if blocking:
            self._blocking(args)
            return None
        self._pip_install_in_progress = True
        self.commands.append(args)
        self._pending.append((_run_pip(args), completedCallback))
        return None

    def processEvents(self, timeout: float = 300) -> None:
        """What Qt's event loop does for the QProcess: wait for it, then call back on this thread."""
        pending, self._pending = self._pending, []
        for process, callback in pending:
            process.communicate(timeout=timeout)
            self._pip_install_in_progress = False
            if callback:
                callback(process.returncode)

    def _blocking(self, args):
        self.commands.append(args)
        process = _run_pip(args)
        output, _ = process.communicate(timeout=300)
        if process.returncode != 0:
            raise subprocess.CalledProcessError(process.returncode, "pip install", output=output)

    @staticmethod
    def _build_pip_args(requirements, constraints=None, no_deps=False):
        if type(requirements) == str:  # noqa: E721
            args = ["install", *(shlex.split(requirements))]
        elif type(requirements) == list:  # noqa: E721
            args = ["install", *requirements]
        else:
            raise ValueError("pip_install requirement input must be string or list")
        if no_deps:
            args.append("--no-deps")
        if constraints is not None:
            args.extend(["-c", str(constraints)])
        return args


def slicer_510() -> SimpleNamespace:
    return SimpleNamespace(util=Slicer510Util())


def slicer_512(testing: bool = False) -> SimpleNamespace:
    packaging = Slicer512Packaging(testing)

    def pip_install(requirements, **kwargs):  # slicer.util.pip_install in 5.12: forwards
        return packaging.pip_install(requirements, **kwargs)

    return SimpleNamespace(packaging=packaging, util=SimpleNamespace(pip_install=pip_install))
