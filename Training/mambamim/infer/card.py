"""The model card (``model.json``) as a type, read once per run.

The card's shape is written once, as a JSON schema, ``Resources/model_card.schema.json``; the engine checks
cards against it here and the Slicer module's library against the same file. What a schema cannot say is
checked in code below: label values are unique (and missing colours filled in, :mod:`mambamim.data.labels`),
the intensity spec's fields fit its type (:mod:`mambamim.data.intensity`), and the weights file is a plain
file name inside the package. Whether the network fits the card is checked where the network is built
(:mod:`mambamim.infer.package`).

Example::

    card = ModelCard.from_dict(json.loads(Path("model/model.json").read_text()), where="model/")
    card.input.spacing, card.input.roi_size, [label.name for label in card.labels]
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mambamim.data.intensity import validate_intensity_spec
from mambamim.data.labels import LabelError, parse_labels
from mambamim.errors import MambaMIMError

FORMAT_VERSION = 1
CARD_FILE = "model.json"
SCHEMA_FILE = "model_card.schema.json"


class PackageError(MambaMIMError, ValueError):
    """A model package or card is invalid; the message names the package and what is wrong."""


@dataclass(frozen=True)
class Label:
    """One foreground class: its value in the label map, name, display colour and optional SNOMED code."""

    value: int
    name: str
    color: tuple[int, int, int]
    snomed: Any = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"value": self.value, "name": self.name, "color": list(self.color)}
        if self.snomed:
            record["snomed"] = self.snomed
        return record


@dataclass(frozen=True)
class InputSpec:
    """How an input volume is prepared for the network and how the sliding window runs over it."""

    channels: int
    modality: str  # "CT" or "MR"
    spacing: tuple[float, float, float]  # mm, x y z
    intensity: Mapping[str, Any]  # a spec of mambamim.data.intensity
    roi_size: tuple[int, int, int]  # voxels, x y z
    overlap: float  # in [0, 1)


@dataclass(frozen=True)
class Architecture:
    """The network: its registry name and the constructor arguments that differ from the defaults."""

    name: str
    config: Mapping[str, Any]


@dataclass(frozen=True)
class ModelCard:
    """A checked model card; :meth:`from_dict` reads one, :meth:`to_dict` gives the on-disk form."""

    name: str
    version: str
    architecture: Architecture
    input: InputSpec
    labels: tuple[Label, ...]
    weights_file: str
    weights_sha256: str
    description: str = ""
    license: str = ""
    training_data: str = ""
    metrics: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def num_classes(self) -> int:
        """Output channels the label map needs: background plus the largest label value."""
        return max(label.value for label in self.labels) + 1

    @property
    def label_values(self) -> list[int]:
        return [label.value for label in self.labels]

    @classmethod
    def from_dict(cls, data: Any, where: str = "model card") -> ModelCard:
        """Check ``data`` (a parsed ``model.json``) and build the card; ``PackageError`` naming ``where``
        and the first problem otherwise."""
        card = check_card(data, where)
        section = card["input"]
        return cls(
            name=card["name"],
            version=card["version"],
            architecture=Architecture(
                card["architecture"]["name"], MappingProxyType(dict(card["architecture"]["config"]))
            ),
            input=InputSpec(
                channels=int(section["channels"]),
                modality=section["modality"],
                spacing=tuple(float(s) for s in section["spacing"]),
                intensity=MappingProxyType(validate_intensity_spec(section["intensity"])),
                roi_size=tuple(int(r) for r in section["roi_size"]),
                overlap=float(section["overlap"]),
            ),
            labels=tuple(
                Label(e["value"], e["name"], tuple(e["color"]), e.get("snomed")) for e in card["labels"]
            ),
            weights_file=card["weights"]["file"],
            weights_sha256=card["weights"]["sha256"].lower(),
            description=card.get("description", ""),
            license=card.get("license", ""),
            training_data=card.get("training_data", ""),
            metrics=MappingProxyType(dict(card.get("metrics") or {})),
        )

    def labels_as_dicts(self) -> list[dict[str, Any]]:
        return [label.to_dict() for label in self.labels]


@functools.lru_cache(maxsize=1)
def card_schema() -> dict[str, Any]:
    """The schema, from ``Resources/`` beside the package (the installed extension: the module's library
    folder; a source checkout: the repository root)."""
    here = Path(__file__).resolve()
    for base in here.parents[1:4]:
        path = base / "Resources" / SCHEMA_FILE
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    raise FileNotFoundError(
        f"the model card schema Resources/{SCHEMA_FILE} is missing beside {here.parents[1]}"
    )


def check_card(data: Any, where: str = "model card") -> dict[str, Any]:
    """``data`` checked against the schema and the rules beyond it; a copy with the label table in its
    normal form (sorted, background dropped, colours filled in)."""
    _check_schema(data, card_schema(), where, "")
    card = dict(data)
    try:
        card["labels"] = parse_labels(card["labels"])
        validate_intensity_spec(card["input"]["intensity"])
    except (LabelError, ValueError) as err:
        raise PackageError(f"{where}: {err}") from None
    if not is_plain_name(card["weights"]["file"]):
        raise PackageError(
            f"{where}: the weights file {card['weights']['file']!r} is not a plain file name inside the "
            "package (paths such as ../x, /dev/zero or sub/x are refused)"
        )
    return card


def check_input_section(section: Any, where: str = "model card") -> None:
    """The card's ``input`` section alone (a card being made), against the schema and the intensity rules."""
    schema = card_schema()
    _check_schema(section, {**schema["$defs"]["input"], "$defs": schema["$defs"]}, where, "input/")
    try:
        validate_intensity_spec(section["intensity"])
    except ValueError as err:
        raise PackageError(f"{where}: {err}") from None


def _check_schema(data: Any, schema: dict[str, Any], where: str, prefix: str) -> None:
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        at = prefix + "/".join(str(part) for part in error.absolute_path)
        place = f"at {at} " if at else ""
        raise PackageError(f"{where}: {CARD_FILE} {place}is invalid: {error.message}")


def is_plain_name(name: Any) -> bool:
    """A file name without folders, drive letters, parent references or control characters."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\:") and name.isprintable()
        and name == name.strip()
    )
