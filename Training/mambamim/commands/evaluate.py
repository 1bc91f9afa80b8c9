"""`mambamim evaluate`: per-case, per-class Dice and HD95 of predicted against reference label maps."""

from __future__ import annotations

import argparse
from pathlib import Path

from mambamim.errors import InvalidInput

HELP = (
    "per-case, per-class Dice, Normalized Surface Dice, HD95 (mm) and volumes (mL) of predictions "
    "against reference label maps, as CSV"
)


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
    from mambamim.infer.evaluate import DEFAULT_NSD_TOLERANCE_MM

    parser.add_argument(
        "--nsd-tolerance", nargs="+", metavar="MM|CLASS=MM", default=[f"{DEFAULT_NSD_TOLERANCE_MM:g}"],
        help="Normalized Surface Dice tolerance in mm: one number for every class and/or CLASS=MM per "
        f"class, CLASS a name or a value (default {DEFAULT_NSD_TOLERANCE_MM:g} mm; "
        "e.g. --nsd-tolerance 2 liver=3 5=1)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from mambamim.data.labels import parse_labels
    from mambamim.infer.evaluate import (
        UNMATCHED,
        evaluate_paths,
        format_summary,
        parse_nsd_tolerance,
        summarize,
        write_rows_csv,
    )

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"output {args.out} already exists; pass --overwrite to replace it")
    labels = None
    if args.labels is not None:
        try:
            labels = parse_labels(json.loads(args.labels.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise InvalidInput(f"--labels {args.labels}: cannot read label JSON ({err})") from None
    tolerance = parse_nsd_tolerance(args.nsd_tolerance)
    rows = evaluate_paths(args.pred, args.ref, labels, nsd_tolerance=tolerance)
    write_rows_csv(rows, args.out, overwrite=args.overwrite)
    print(format_summary(summarize(rows)))
    scored = {r["case"] for r in rows if r["status"] not in UNMATCHED}
    print(f"{len(scored)} case(s); per-case rows in {args.out}")
    for row in rows:
        if row["status"] == "no_reference":
            print(f"warning: prediction {row['prediction']} has no reference: not scored", file=sys.stderr)
        elif row["status"] == "no_prediction":
            print(f"warning: reference {row['reference']} has no prediction: not scored", file=sys.stderr)
    return 0
