"""The package's shape, read from the source with `ast` (nothing is executed): data flows one way (the lower layers
geometry, diffusion, models, io, config, seeds import nothing from the higher ones, function-level imports
included); no function is over 60 lines; every public function and class has a docstring."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOWER = ("geometry", "diffusion", "models", "io", "config", "seeds")
HIGHER = ("data", "training", "pipeline", "render", "eval", "demo", "cli")
MAX_FUNCTION_LINES = 60
# The U-Net's constructor wires the official architecture block by block (its state-dict keys follow from it);
# nothing else may join this list.
LONG_FUNCTIONS = {
    "iterview.models.adm:ADMUNet.__init__",
}
# nn.Module.forward methods of the U-Net's blocks: their classes' docstrings give the shapes.
UNDOCUMENTED = {
    "iterview.models.adm:GroupNorm32.forward",
    "iterview.models.adm:TimestepEmbedding.forward",
    "iterview.models.adm:TimestepSequential.forward",
    "iterview.models.adm:Upsample.forward",
    "iterview.models.adm:Downsample.forward",
    "iterview.models.adm:ResBlock.forward",
    "iterview.models.adm:AttentionBlock.forward",
}


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


def definitions(tree: ast.AST, prefix: str = "") -> list[tuple[str, ast.AST]]:
    """(qualified name, node) of every function and class in tree, nested ones included (`outer.inner`)."""
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            found.append((name, node))
            found += definitions(node, f"{name}.")
        else:
            found += definitions(node, prefix)
    return found


def public_api(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """(qualified name, node) of the public functions and classes of a module and the public methods of its public
    classes; nested functions are the enclosing function's business."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            found.append((node.name, node))
            if isinstance(node, ast.ClassDef):
                found += [(f"{node.name}.{name}", member) for name, member in public_api(node)]
    return found


def package_sources() -> list[tuple[str, ast.Module]]:
    """(module name, parsed source) of every module of iterview."""
    return [(module_name(path), ast.parse(path.read_text())) for path in sorted((ROOT / "iterview").rglob("*.py"))]


def lines(node: ast.AST) -> int:
    """Source lines of a definition, from `def` (decorators not counted) to its last line."""
    return node.end_lineno - node.lineno + 1


def test_no_function_is_over_60_lines():
    found = {
        f"{module}:{name}": lines(node)
        for module, tree in package_sources()
        for name, node in definitions(tree)
        if not isinstance(node, ast.ClassDef) and lines(node) > MAX_FUNCTION_LINES
    }
    too_long = sorted(f"{name} ({count} lines)" for name, count in found.items() if name not in LONG_FUNCTIONS)
    assert not too_long, "split these into named helpers:\n" + "\n".join(too_long)
    assert not LONG_FUNCTIONS - set(found), (
        f"no longer over the limit, drop from LONG_FUNCTIONS: {LONG_FUNCTIONS - set(found)}"
    )


def test_every_public_function_and_class_has_a_docstring():
    found = {
        f"{module}:{name}"
        for module, tree in package_sources()
        for name, node in public_api(tree)
        if ast.get_docstring(node) is None
    }
    assert not found - UNDOCUMENTED, "add docstrings:\n" + "\n".join(sorted(found - UNDOCUMENTED))
    assert not UNDOCUMENTED - found, f"documented now, drop from UNDOCUMENTED: {UNDOCUMENTED - found}"


def test_the_scans_see_nested_long_functions_and_undocumented_public_methods():
    body = "        x = 1\n" * 61
    source = f"class Shown:\n    def method(self):\n        pass\n\n\ndef _hidden():\n    def inner():\n{body}"
    tree = ast.parse(source)
    sizes = {name: lines(node) for name, node in definitions(tree)}
    assert sizes == {"Shown": 3, "Shown.method": 2, "_hidden": 63, "_hidden.inner": 62}
    assert [name for name, node in public_api(tree) if ast.get_docstring(node) is None] == ["Shown", "Shown.method"]
