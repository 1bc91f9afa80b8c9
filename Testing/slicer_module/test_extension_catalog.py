"""The Extensions Index entry (MambaMIMSegmenter.json) against Slicer's catalog-entry schema v1.0.1.

The schema below is written from Slicer's source (v5.10.0: Schemas/slicer-extension-catalog-entry-
schema-v1.0.1.json): required ``$schema``, ``category``, ``scm_url``; no other properties than those
listed; ``scm_type`` git or local; ``tier`` an integer 1-5; ``build_dependencies`` a list of strings.
Entries in the Extensions Index (e.g. TotalSegmentator.json there) name this schema's URL in ``$schema``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "MambaMIMSegmenter.json"
SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
    "slicer-extension-catalog-entry-schema-v1.0.1.json#"
)
CATALOG_SCHEMA_V101 = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "category": {"type": "string"},
        "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"},
        "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"},
        "tier": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}


def _cmake(name: str) -> str:
    match = re.search(rf'set\({name} "([^"]*)"\)', (ROOT / "CMakeLists.txt").read_text())
    assert match, name
    return match.group(1)


def test_catalog_entry_is_valid_and_matches_the_extension():
    entry = json.loads(ENTRY.read_text())
    jsonschema.validate(entry, CATALOG_SCHEMA_V101)
    assert entry["$schema"] == SCHEMA_URL
    assert entry["build_dependencies"] == ["PyTorch"] == _cmake("EXTENSION_DEPENDS").split()
    assert entry["category"] == _cmake("EXTENSION_CATEGORY")
    assert _cmake("EXTENSION_HOMEPAGE").startswith(entry["scm_url"])
    assert entry["scm_revision"] and entry["tier"] == 1  # new extensions start experimental


def test_the_schema_facts_refuse_what_the_index_refuses():
    entry = json.loads(ENTRY.read_text())
    for broken in (
        {k: v for k, v in entry.items() if k != "scm_url"},
        {**entry, "tier": 7},
        {**entry, "build_dependencies": "PyTorch"},
        {**entry, "homepage": "https://example.org"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, CATALOG_SCHEMA_V101)
