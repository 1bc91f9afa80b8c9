"""Entry-script wrapper: every way out of ``Training/pretrain.py`` / ``finetune.py`` is an exit status.

``Slicer --no-main-window --python-script Training/pretrain.py -- ARGS`` exits only when the script
raises ``SystemExit``; any other exception (a missing torch, a bug) would leave Slicer running with no
status. So the script's whole run, imports included, goes through :func:`exit_status`, and
:func:`run_script` always ends in ``sys.exit``: 0 done, 1 error (traceback on stderr), 2 command-line
error (argparse), 130 interrupted. A leading ``--`` (Slicer's ``--ignore-rest``, which keeps Slicer
from consuming arguments such as ``--help``) is dropped.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn


def exit_status(command: str, argv: Sequence[str]) -> int:
    args = list(argv)
    if args[:1] == ["--"]:
        args = args[1:]
    try:
        from mambamim.cli import main

        return int(main([command, *args]) or 0)
    except SystemExit as exc:  # argparse (--help: 0, usage error: 2) or a command's own exit
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BaseException:
        traceback.print_exc()
        print(f"mambamim {command} failed (see the error above).", file=sys.stderr)
        return 1


def run_script(command: str) -> NoReturn:
    """Run ``mambamim COMMAND`` with this process's arguments and exit with its status."""
    status = exit_status(command, sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(status)
