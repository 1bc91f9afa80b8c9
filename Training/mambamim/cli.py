"""`mambamim` command line: one sub-command per module in `mambamim.commands`.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import only argparse-level code at top level (heavy imports live inside ``run``),
so building the parser stays fast. User-facing errors (:mod:`mambamim.errors`) are reported here, as one
line; ``segment`` and ``reconstruct`` end their progress stream with the same errors themselves.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = (
    "info", "pretrain", "finetune", "crossval", "evaluate", "package", "segment", "reconstruct", "convert",
    "web",
)


def build_parser() -> argparse.ArgumentParser:
    from mambamim import __version__
    from mambamim.commands.aliases import HelpFormatter
    from mambamim.commands.examples import epilog

    parser = argparse.ArgumentParser(prog="mambamim", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mambamim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"mambamim.commands.{name}")
        # every --help shows the defaults and one example (issue 13 §4)
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=epilog(name),
                                        formatter_class=HelpFormatter)  # fmt: skip
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mambamim.cpu_memory import use_huge_pages

    use_huge_pages()  # before anything imports torch (see mambamim.cpu_memory)
    from mambamim.errors import USER_ERRORS

    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except USER_ERRORS as err:  # the user's to fix: one line; anything else is a bug and keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
