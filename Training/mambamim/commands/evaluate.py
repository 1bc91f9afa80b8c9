"""`mambamim evaluate`: per-case, per-class Dice and HD95 of predicted against reference label maps."""

from __future__ import annotations

import argparse
from pathlib import Path

from mambamim.errors import InvalidInput

HELP = "per-case, per-class Dice and HD95 (mm) of predictions against reference label maps, as CSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", type=Path, required=True, help="predicted label map, or a folder of them")
    parser.add_argument(
        "--ref",
        type=Path,
        required=True,
        help="reference label map, or a folder (cases matched by name; <case>_seg predictions match <case>)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help='label JSON: {"1": "spleen", ...} or [{"value", "name"}...] (default: every value found)',
    )
    parser.add_argument("--out", type=Path, required=True, help="CSV file for the per-case, per-class rows")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing CSV")


def run(args: argparse.Namespace) -> int:
    import json

    from mambamim.data.labels import parse_labels
    from mambamim.infer.evaluate import evaluate_paths, format_summary, summarize, write_rows_csv

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"output {args.out} already exists; pass --overwrite to replace it")
    labels = None
    if args.labels is not None:
        try:
            labels = parse_labels(json.loads(args.labels.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise InvalidInput(f"--labels {args.labels}: cannot read label JSON ({err})") from None
    rows = evaluate_paths(args.pred, args.ref, labels)
    write_rows_csv(rows, args.out, overwrite=args.overwrite)
    print(format_summary(summarize(rows)))
    print(f"{len({r['case'] for r in rows})} case(s); per-case rows in {args.out}")
    return 0
