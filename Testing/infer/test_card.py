"""The model card has one schema (Resources/model_card.schema.json): the engine's typed reader, the Slicer
library's own small checker and the reference implementation (``jsonschema``) accept and refuse the same
cards, and the shipped demo card reads unchanged."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from mambamim.infer.card import ModelCard, PackageError, card_schema
from MambaMIMSegmenterLib.cardschema import cardProblems

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "Resources" / "models" / "btcv-hymamba-demo"


def demo_card() -> dict:
    return json.loads((DEMO / "model.json").read_text())


def changed(path: str, value) -> dict:
    card = demo_card()
    *parents, last = path.split("/")
    target = card
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is KeyError:
        del target[last]
    else:
        target[int(last) if isinstance(target, list) else last] = value
    return card


INVALID = {
    "no labels": changed("labels", []),
    "label without a name": changed("labels/0/name", KeyError),
    "colour out of range": changed("labels/1/color", [0, 0, 256]),
    "modality": changed("input/modality", "PET"),
    "zero spacing": changed("input/spacing/1", 0),
    "two spacings": changed("input/spacing", [1.5, 1.5]),
    "overlap 1": changed("input/overlap", 1.0),
    "fractional roi": changed("input/roi_size/0", 64.5),
    "boolean channels": changed("input/channels", True),
    "unknown intensity": changed("input/intensity/type", "gamma"),
    "short hash": changed("weights/sha256", "abc"),
    "no weights file": changed("weights/file", KeyError),
    "format 2": changed("format_version", 2),
    "architecture config": changed("architecture/config", [1, 2]),
    "no version": changed("version", KeyError),
}
VALID = {
    "demo": demo_card(),
    "extra field": changed("homepage", "https://example.org"),
    "snomed code": changed("labels/0/snomed", {"category": "T-D0050", "type": "T-62000"}),
    "integral float spacing": changed("input/spacing/0", 3),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_cards_are_refused_by_all_three(name):
    card = INVALID[name]
    assert not jsonschema.Draft202012Validator(card_schema()).is_valid(card)
    assert cardProblems(card), "the Slicer library's checker accepted it"
    with pytest.raises(PackageError, match=r"model\.json .*is invalid"):
        ModelCard.from_dict(card, where="test")


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_cards_are_accepted_by_all_three(name):
    card = VALID[name]
    jsonschema.validate(card, card_schema())
    assert cardProblems(card) == []
    ModelCard.from_dict(copy.deepcopy(card))


def test_the_engine_and_the_library_read_the_same_schema_file():
    from MambaMIMSegmenterLib.cardschema import cardSchema

    on_disk = json.loads((ROOT / "Resources" / "model_card.schema.json").read_text())
    assert cardSchema() == card_schema() == on_disk


def test_the_demo_card_reads_unchanged():
    raw = demo_card()
    card = ModelCard.from_dict(copy.deepcopy(raw), where=str(DEMO))
    assert card.name == raw["name"] and card.version == raw["version"]
    assert card.input.spacing == tuple(raw["input"]["spacing"]) and card.input.modality == "CT"
    assert dict(card.input.intensity) == raw["input"]["intensity"]
    assert card.labels_as_dicts() == raw["labels"] and card.num_classes == 14
    assert card.architecture.name == "hymamba"
    assert dict(card.architecture.config) == raw["architecture"]["config"]
    assert card.weights_sha256 == raw["weights"]["sha256"] and card.metrics == raw["metrics"]
    with pytest.raises(AttributeError):  # frozen: one card per run, nobody edits it on the way
        card.name = "other"


def test_rules_beyond_the_schema():
    with pytest.raises(PackageError, match="unique"):
        ModelCard.from_dict(changed("labels/1/value", 1))
    with pytest.raises(PackageError, match="plain file name"):
        ModelCard.from_dict(changed("weights/file", "../weights.safetensors"))
    with pytest.raises(PackageError, match="upper > lower"):
        ModelCard.from_dict(changed("input/intensity/upper", -500))
