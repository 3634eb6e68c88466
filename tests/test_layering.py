"""Data flows one way: the lower layers (geometry, diffusion, models, io, config, seeds) import nothing from the higher
ones. Imports are read from the source with `ast` (function-level ones included), so nothing is executed."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOWER = ("geometry", "diffusion", "models", "io", "config", "seeds")
HIGHER = ("data", "training", "pipeline", "render", "eval", "demo", "cli")


def module_name(path: Path) -> str:
    """iterview/geometry/mesh.py -> iterview.geometry.mesh (a package's __init__ names the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of every module (and imported name) in source, at any depth; relative imports are
    resolved against `package`, the importing module's package."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def layer(module: str) -> str | None:
    """The top-level part of iterview a module belongs to (None outside iterview)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "iterview" else None


def test_lower_layers_import_nothing_from_higher_ones():
    files = [p for p in (ROOT / "iterview").rglob("*.py") if layer(module_name(p)) in LOWER]
    assert {layer(module_name(p)) for p in files} == set(LOWER)
    upward = sorted(
        f"{module_name(path)} imports {name}"
        for path in files
        for name in imported_modules(path.read_text(), module_name(path).rpartition(".")[0])
        if layer(name) in HIGHER
    )
    assert not upward, "\n".join(upward)


def test_nested_and_relative_upward_imports_are_seen():
    source = "def f():\n    from iterview.pipeline import scene\n\nfrom ..render import video\nimport iterview.cli\n"
    found = {layer(name) for name in imported_modules(source, "iterview.geometry")}
    assert {"pipeline", "render", "cli"} <= found
