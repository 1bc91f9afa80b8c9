"""The coded meaning of a model card's label: SNOMED CT category and type, as Slicer and DICOM SEG need.

A card label's optional ``snomed`` is a code (``"10200004"``) or ``{code, meaning?, scheme?, category?}``
(``category`` again ``{code, meaning, scheme?}``), the same convention the Slicer module reads. The
category defaults to SCT 123037004 "Anatomical Structure", the code Slicer's terminologies, dcmqi and
TotalSegmentator use. A label without a code is typed as the generic SCT 91723000 "Anatomical
Structure" (DICOM CID 7150's code): a reader then knows only that it is some anatomy, and the segment's
name says which; :func:`uncoded_labels` lists those labels so the caller can say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SLICER_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMICAL_STRUCTURE_CATEGORY = ("SCT", "123037004", "Anatomical Structure")
GENERIC_ANATOMY_TYPE = ("SCT", "91723000", "Anatomical Structure")


@dataclass(frozen=True)
class Coded:
    """One coded concept: (coding scheme designator, code value, code meaning)."""

    scheme: str
    code: str
    meaning: str

    def as_list(self) -> list[str]:
        return [self.scheme, self.code, self.meaning]


@dataclass(frozen=True)
class LabelTerminology:
    category: Coded
    type: Coded
    coded: bool  # False: the card had no code and the generic anatomy type stands in


def label_terminology(label: dict[str, Any]) -> LabelTerminology:
    """Category and type of a card label (see the module docstring)."""
    code = label.get("snomed")
    if not code:
        return LabelTerminology(Coded(*ANATOMICAL_STRUCTURE_CATEGORY), Coded(*GENERIC_ANATOMY_TYPE), False)
    type_code = code if isinstance(code, dict) else {"code": str(code)}
    category = type_code.get("category") or {}
    return LabelTerminology(
        Coded(
            str(category.get("scheme", ANATOMICAL_STRUCTURE_CATEGORY[0])),
            str(category.get("code", ANATOMICAL_STRUCTURE_CATEGORY[1])),
            str(category.get("meaning", ANATOMICAL_STRUCTURE_CATEGORY[2])),
        ),
        Coded(
            str(type_code.get("scheme", "SCT")),
            str(type_code["code"]),
            str(type_code.get("meaning") or label["name"]),
        ),
        True,
    )


def uncoded_labels(labels: Sequence[dict[str, Any]]) -> list[str]:
    """Names of the labels that carry no terminology code (typed as generic anatomy)."""
    return [label["name"] for label in labels if not label.get("snomed")]


def generic_terminology_note(labels: Sequence[dict[str, Any]]) -> str:
    """A one-line notice when some labels have no code; empty when all are coded."""
    names = uncoded_labels(labels)
    if not names:
        return ""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"the model card gives no SNOMED CT code for {shown}: typed as the generic "
        f"SCT {GENERIC_ANATOMY_TYPE[1]} 'Anatomical Structure' (the segment names say which organ)"
    )
