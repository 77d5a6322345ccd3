"""docs/contracts.md names every public function and class of the library, the plugin and the job runner."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = (ROOT / "docs" / "contracts.md").read_text()
DOCUMENTED = sorted([*ROOT.glob("pure_core/*.py"), *ROOT.glob("synthetic/*.py"),
                     *ROOT.glob("sample_photos/*.py"), ROOT / "precompute/job.py",
                     ROOT / "precompute/runner.py", ROOT / "precompute/distributed.py",
                     ROOT / "precompute/stages/__init__.py"])


def _public_definitions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_")]


@pytest.mark.parametrize("path", DOCUMENTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_public_function_and_class_is_in_the_contracts(path):
    missing = [name for name in _public_definitions(path) if not re.search(rf"\b{name}\b", CONTRACTS)]
    assert missing == [], f"docs/contracts.md does not name {missing} of {path.relative_to(ROOT)}"
