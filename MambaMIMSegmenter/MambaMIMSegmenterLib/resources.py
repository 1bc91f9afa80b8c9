"""Shared resources (the model registry, the model card schema, pyproject.toml, the demo models)."""

from __future__ import annotations

from pathlib import Path

from .enginepath import MODULE_DIR


def resourcePath(name: str) -> Path:
    """A shared resource: next to the module when installed, at the repository root in a checkout."""
    bases = (MODULE_DIR / "Resources", MODULE_DIR, MODULE_DIR.parent / "Resources", MODULE_DIR.parent)
    for base in bases:
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(f"resource {name} not found in any of: {', '.join(str(b) for b in bases)}")
