"""`mambamim crossval`: all K folds of a fine-tuning run in one command, resumable, with a summary table."""

from __future__ import annotations

import argparse

from mambamim.commands.cli_args import exit_code
from mambamim.commands.finetune import add_arguments as add_finetune_arguments

HELP = "Cross-validate: fine-tune every fold (resumable fold by fold) and write a Dice/NSD summary table."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_finetune_arguments(parser)
    # the epilog keeps its line breaks (commands.aliases.HelpFormatter); the example follows
    parser.epilog = (
        "Each fold trains in OUTPUT_DIR/fold_K; run the same command again to continue after an\n"
        "interruption (finished folds are skipped, an interrupted fold resumes). Writes\n"
        "OUTPUT_DIR/summary.json and summary.csv. --fold, --split, --resume and --package do not apply.\n\n"
        + (parser.epilog or "")
    )
    parser.add_argument(
        "--nsd-tolerance", type=float, default=2.0, metavar="MM",
        help="boundary tolerance of the Normalized Surface Dice in mm (default 2.0)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from mambamim.commands.finetune import config_from_args
    from mambamim.engine.crossval import run_crossval
    from mambamim.errors import InvalidInput

    given = {"--fold": args.fold, "--split": args.split, "--resume": args.resume, "--package": args.package}
    ignored = [flag for flag, value in given.items() if value is not None]
    if ignored:
        raise InvalidInput(f"{', '.join(ignored)} do(es) not apply to crossval (see --help)")
    result = run_crossval(
        config_from_args(args), args.output_dir, device=args.device, workers=args.workers,
        overwrite=args.overwrite, show_bar=not args.no_progress, nsd_tolerance_mm=args.nsd_tolerance,
    )  # fmt: skip
    return exit_code(result.status)
