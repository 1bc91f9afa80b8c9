"""Ensembles: several model packages (e.g. the five folds of a cross-validation) and saved probability
files segment one image together; :func:`mambamim.infer.segment.segment_image` averages their
probabilities (:mod:`mambamim.infer.probabilities`), as ``nnUNetv2_predict -f 0 1 2 3 4`` and
``nnUNetv2_ensemble`` do.

Members must share one label table (same values, same names in the same order): averaging a "liver"
channel with another model's "spleen" channel would be silently wrong, so differing tables are refused
with both members named.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

from mambamim.errors import InvalidInput
from mambamim.infer.package import LoadedPackage, load_package
from mambamim.infer.probabilities import PROBABILITY_SUFFIX, SavedProbabilities, load_probabilities

ModelSource = Union[str, Path, LoadedPackage]
Models = Union[ModelSource, Sequence[ModelSource]]


def as_list(models: Models) -> list[ModelSource]:
    if isinstance(models, (str, Path, LoadedPackage)):
        return [models]
    return list(models)


def is_probability_file(source: ModelSource) -> bool:
    return not isinstance(source, LoadedPackage) and str(source).lower().endswith(PROBABILITY_SUFFIX)


def label_signature(labels: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    """What must agree between members: each label's value and name (colours may differ)."""
    return [(int(label["value"]), str(label["name"])) for label in labels]


def check_same_labels(members: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> None:
    """Refuse members ``(name, label table)`` whose tables differ, naming the first two that disagree."""
    if not members:
        return
    first_name, first_labels = members[0]
    expected = label_signature(first_labels)
    for name, labels in members[1:]:
        signature = label_signature(labels)
        if signature != expected:
            only_first = sorted(set(expected) - set(signature))[:3]
            only_other = sorted(set(signature) - set(expected))[:3]
            ours, theirs = only_first or "another order", only_other or "another order"
            detail = f"{first_name} has {ours}, {name} has {theirs}"
            raise InvalidInput(
                f"cannot ensemble {first_name} and {name}: their label tables differ ({detail})"
            )


def load_members(models: Models) -> tuple[list[LoadedPackage], list[SavedProbabilities]]:
    """Load every package and probability file of ``models``; refuse differing label tables."""
    sources = as_list(models)
    if not sources:
        raise InvalidInput("no model package given")
    packages: list[LoadedPackage] = []
    saved: list[SavedProbabilities] = []
    for source in sources:
        if is_probability_file(source):
            saved.append(load_probabilities(source))
        else:
            packages.append(source if isinstance(source, LoadedPackage) else load_package(source))
    check_same_labels(
        [(str(p.path), p.card.labels_as_dicts()) for p in packages] + [(str(s.path), s.labels) for s in saved]
    )
    return packages, saved
