"""Label tables: ``[{value, name, color, snomed?}]`` from the forms datasets and model cards use.

Value 0 is background and never listed. Labels without a colour get one from :data:`PALETTE`, so a
segmentation shows the same colours in Slicer, the web app and every exported file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mambamim.errors import MambaMIMError

# Distinct, colour-blind-friendlier defaults (Okabe-Ito, then Tableau) for labels without a colour.
PALETTE = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
)



class LabelError(MambaMIMError, ValueError):
    """A label table is malformed; the message says which record and why."""


def parse_labels(labels: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Normalise a label table to ``[{value, name, color, snomed?}]`` sorted by value, background dropped.

    Accepts ``{"1": "spleen", ...}`` (MSD ``dataset.json`` / ``labels_*.json`` style) or a list of
    ``{"value", "name", "color"?, "snomed"?}`` records. Value 0 is background and never listed.
    """
    if isinstance(labels, Mapping):
        records = [{"value": k, "name": v} for k, v in labels.items()]
    elif isinstance(labels, Sequence) and not isinstance(labels, str):
        records = [dict(r) for r in labels]
    else:
        raise LabelError(
            f"labels must be a mapping value->name or a list of records, got {type(labels).__name__}"
        )
    table = []
    for record in records:
        try:
            value, name = int(record["value"]), str(record["name"])
        except (KeyError, TypeError, ValueError):
            raise LabelError(f"label record {record!r} needs an integer 'value' and a 'name'") from None
        if value < 0:
            raise LabelError(f"label {name!r} has a negative value {value}")
        if value == 0:
            continue
        color = record.get("color") or PALETTE[(value - 1) % len(PALETTE)]
        if len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
            raise LabelError(f"label {name!r}: color must be 3 integers 0-255, got {color!r}")
        entry: dict[str, Any] = {"value": value, "name": name, "color": list(color)}
        if record.get("snomed"):
            entry["snomed"] = record["snomed"]
        table.append(entry)
    values = [e["value"] for e in table]
    if len(set(values)) != len(values):
        raise LabelError(f"label values must be unique, got {sorted(values)}")
    if not table:
        raise LabelError("the label table has no foreground labels")
    return sorted(table, key=lambda e: e["value"])
