"""Layers of ``mambamim`` only point down, and no modules import each other in a circle.

Every module's imports are read from its source (imports inside functions too, where circles hide), so
the rule holds for what runs, not only for what is imported at load time.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "Training" / "mambamim"

# The allowed order, bottom first: a module may import its own layer and the layers before it.
# "" is the package root (safe_write, checkpoint, errors, cpu_memory, ...); the optional nnU-Net
# integration sits beside the training engine; the command line and the entry-script wrapper on top.
LAYERS = (
    ("",),
    ("ops",),
    ("nn",),
    ("data",),
    ("mim",),
    ("infer",),
    ("engine", "nnunet"),
    ("commands", "cli", "__main__", "entry"),
)


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["mambamim", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def layer_of(module: str) -> int:
    parts = module.split(".")
    group = parts[1] if len(parts) > 1 else ""
    if len(parts) == 2 and MODULES[module].parent == PACKAGE and group not in ("cli", "__main__", "entry"):
        group = ""  # a utility module at the package root
    for index, names in enumerate(LAYERS):
        if group in names:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its folder to LAYERS")


def imported_modules(module: str) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # ``from pkg import module`` names a module; ``from module import name`` the module itself.
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in MODULES and name not in (module, "mambamim"):
                found.add(name)
    return found


GRAPH = {module: imported_modules(module) for module in MODULES}


def test_every_module_has_a_layer_and_the_reader_sees_imports():
    for module in MODULES:
        layer_of(module)
    # The reader must see imports inside functions (the command modules import lazily).
    assert "mambamim.infer.segment" in GRAPH["mambamim.commands.segment"]
    assert "mambamim.data.imageio" in GRAPH["mambamim.data.transforms"]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} ({LAYERS[layer_of(module)][0] or 'root'}) imports {target} "
        f"({LAYERS[layer_of(target)][0] or 'root'})"
        for module, targets in graph.items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]


def circles(graph: dict[str, set[str]]) -> list[str]:
    found = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                found.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    return found


def test_no_module_imports_a_later_layer():
    upward = upward_imports(GRAPH)
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_circles():
    found = circles(GRAPH)
    assert not found, "modules that import each other:\n" + "\n".join(found)


def test_the_checks_catch_an_upward_import_and_a_circle():
    graph = {
        "mambamim.data.sources": {"mambamim.infer.package"},
        "mambamim.infer.package": {"mambamim.data.labels"},
        "mambamim.mim.model": {"mambamim.mim.loss"},
        "mambamim.mim.loss": {"mambamim.mim.model"},
    }
    assert upward_imports(graph) == ["mambamim.data.sources (data) imports mambamim.infer.package (infer)"]
    assert circles(graph) == ["mambamim.mim.model -> mambamim.mim.loss -> mambamim.mim.model"]
