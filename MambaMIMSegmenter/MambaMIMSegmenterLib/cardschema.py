"""Model cards (``model.json``) checked against ``Resources/model_card.schema.json``, the schema the engine
uses too, by a small checker of the JSON-schema keywords that schema is written with. The library needs
neither the engine nor the ``jsonschema`` package for it (a fresh Slicer has neither installed).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from .resources import resourcePath

SCHEMA_FILE = "model_card.schema.json"
_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "number": (int, float),
    "integer": int,
    "boolean": bool,
    "null": type(None),
}


@functools.lru_cache(maxsize=1)
def cardSchema() -> dict[str, Any]:
    return json.loads(resourcePath(SCHEMA_FILE).read_text(encoding="utf-8"))


def cardProblems(card: Any) -> list[str]:
    """What is wrong with ``card`` by the schema, one line a problem (empty when it is valid)."""
    schema = cardSchema()
    return schemaProblems(card, schema, schema)


def schemaProblems(value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = "") -> list[str]:
    """Problems of ``value`` against ``schema`` (keywords: $ref to $defs, type, const, enum, required,
    properties, items, minItems, maxItems, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
    minLength, pattern); ``at`` is the path, as ``input/spacing/1``."""
    where = at or "(top level)"
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return schemaProblems(value, root["$defs"][name], root, at)
    expected = schema.get("type")
    if expected is not None:
        kinds = _TYPES[expected]
        if not isinstance(value, kinds) or (isinstance(value, bool) and expected in ("number", "integer")):
            return [f"{where}: {value!r} is not of type '{expected}'"]
    if "const" in schema and value != schema["const"]:
        return [f"{where}: {value!r} is not {schema['const']!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    problems = []
    if isinstance(value, dict):
        problems += [f"{where}: '{key}' is a required property" for key in schema.get("required", ())
                     if key not in value]  # fmt: skip
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                problems += schemaProblems(value[key], sub, root, f"{at}/{key}".lstrip("/"))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{where}: {value!r} should have at least {schema['minItems']} items")
        if len(value) > schema.get("maxItems", len(value)):
            problems.append(f"{where}: {value!r} should have at most {schema['maxItems']} items")
        for index, item in enumerate(value):
            if "items" in schema:
                problems += schemaProblems(item, schema["items"], root, f"{at}/{index}".lstrip("/"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        bounds = (
            ("minimum", lambda b: value < b, "less than the minimum of"),
            ("maximum", lambda b: value > b, "greater than the maximum of"),
            ("exclusiveMinimum", lambda b: value <= b, "less than or equal to the minimum of"),
            ("exclusiveMaximum", lambda b: value >= b, "greater than or equal to the maximum of"),
        )
        problems += [f"{where}: {value!r} is {words} {schema[key]}" for key, outside, words in bounds
                     if key in schema and outside(schema[key])]  # fmt: skip
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{where}: {value!r} should be non-empty")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{where}: {value!r} does not match {schema['pattern']!r}")
    return problems
