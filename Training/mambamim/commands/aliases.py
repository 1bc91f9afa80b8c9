"""One command-line dialect for every sub-command, and the old spellings kept for one release.

Every option has one spelling and one value syntax across sub-commands:

- ``--sw-batch-size N`` (was also ``--sw-batch``): windows per forward pass (MONAI's ``sw_batch_size``);
- ``--roi-size N`` or ``X,Y,Z`` (was also ``--crop-size``, and ``--roi-size X Y Z``): the network's
  input window in voxels, as the model card's ``roi_size``;
- ``--spacing S`` or ``X,Y,Z`` in mm (``package`` took ``--spacing X Y Z``);
- ``--intensity ct | zscore | window:LOWER:UPPER | clip_zscore:LOWER:UPPER:MEAN:STD`` (``package``
  took JSON and ``mr``).

An old spelling still works and prints a one-line notice on stderr; it is hidden from ``--help`` and goes
away in the next release. ``HelpFormatter`` shows every option's default and keeps the examples'
line breaks.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from mambamim.commands.cli_args import REMOVAL, deprecation_notice, intensity_spec, spacing  # noqa: F401


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each help text (unless it states its own or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return text + " (default: %(default)s)"


class DeprecatedAlias(argparse.Action):
    """An old option name: says so, converts like the new one and stores into the new one's ``dest``."""

    def __init__(self, option_strings, dest, replacement: str = "", convert: Callable | None = None,
                 **kwargs) -> None:  # fmt: skip
        self.replacement = replacement
        self.convert = convert
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        deprecation_notice(option_string or self.option_strings[0], self.replacement)
        try:
            value = self.convert(values) if self.convert is not None else values
        except (argparse.ArgumentTypeError, ValueError) as err:
            parser.error(f"argument {option_string}: {err}")
        setattr(namespace, self.dest, value)


def add_alias(
    container, old: str, new: str, dest: str, convert: Callable | None = None, nargs=None
) -> None:
    """Register the hidden old spelling ``old`` of option ``new`` (same ``dest``)."""
    container.add_argument(
        old, dest=dest, action=DeprecatedAlias, replacement=new, convert=convert, nargs=nargs
    )


def roi_size(text: str) -> list[int]:
    """``96`` or ``96,96,64`` (voxels) -> three ints."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"--roi-size must be one or three positive integers, got {text!r}")
    return values


def add_training_aliases(parser: argparse.ArgumentParser) -> None:
    """Old spellings of the options :func:`mambamim.commands.cli_args.add_common_arguments` adds."""
    add_alias(parser, "--crop-size", "--roi-size", "roi", int)


def legacy_intensity(text: str) -> dict[str, Any]:
    """:func:`intensity_spec` (which also takes, with a notice, ``package``'s old ``mr`` and JSON specs)."""
    return intensity_spec(text)


class ThreeValues(argparse.Action):
    """``--opt 1.5`` / ``--opt 1.5,1.5,2``; the deprecated ``--opt 1.5 1.5 2`` (three words) with a notice."""

    def __init__(self, option_strings, dest, convert: Callable[[str], list] = spacing, **kwargs) -> None:
        self.convert = convert
        super().__init__(option_strings, dest, nargs="+", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if len(values) not in (1, 3):
            parser.error(f"argument {option_string}: give one value or X,Y,Z, got {' '.join(values)}")
        if len(values) == 3:
            deprecation_notice(f"{option_string} X Y Z", f"{option_string} X,Y,Z")
        try:
            setattr(namespace, self.dest, self.convert(",".join(values)))
        except argparse.ArgumentTypeError as err:
            parser.error(f"argument {option_string}: {err}")
