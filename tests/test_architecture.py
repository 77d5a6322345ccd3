"""The shape of the code: data flows one way, plugins stay plugins, no private name crosses a module.

pure_core <- precompute -> store -> app; the synthetic world is a plugin of pure_core (it registers "demo" and
"world"), and so are the packaged photographs (they register "photos"); pure_core imports none of the
project's other packages. Read from the source with `ast`, so a new import that breaks the shape fails here
before anyone has to draw the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pure_core", "synthetic", "sample_photos", "precompute", "store", "annotations_db", "app",
            "pure_explorer")
# What each package may import from the project (itself always).
ALLOWED = {
    "pure_core": set(),
    "store": set(),
    "annotations_db": set(),  # the collaborators' database: written by the app, never by precompute
    "synthetic": {"pure_core"},
    "sample_photos": {"pure_core"},
    "precompute": {"pure_core", "store"},
    "app": {"pure_core", "store", "annotations_db"},
    "pure_explorer": {"pure_core", "store", "precompute", "app", "synthetic"},
}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


MODULES = _modules()


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """``(module, [imported names])`` of every import statement, also inside functions."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_package_imports_only_what_the_data_flow_allows(module):
    package = module.split(".")[0]
    for imported, _ in _imports(MODULES[module]):
        top = imported.split(".")[0]
        if top in PACKAGES and top != package:
            assert top in ALLOWED[package], f"{module} imports {imported}: {package} may not depend on {top}"


def test_no_private_name_is_imported_across_modules():
    crossings = [f"{module}: from {imported} import {name}"
                 for module, tree in MODULES.items() for imported, names in _imports(tree)
                 if imported.split(".")[0] in PACKAGES and imported != module
                 for name in names if name.startswith("_")]
    assert crossings == []


def test_only_the_synthetic_package_knows_the_demo_and_the_world_by_name():
    branches = []
    for module, tree in MODULES.items():
        if module.startswith("synthetic"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                literals = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                if {"demo", "world"} & set(literals):
                    branches.append(f"{module}:{node.lineno}")
    assert branches == []
