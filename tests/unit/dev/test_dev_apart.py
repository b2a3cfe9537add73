"""Developer tools live apart from what the worker imports in production."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PRODUCTION = (
    "controller/core",
    "controller/stream",
    "controller/sdk",
    "controller/replay",
    "schemas",
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_production_module_imports_the_developer_tools() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for folder in PRODUCTION
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in sorted(_imports(path))
        if name == "controller.dev" or name.startswith("controller.dev.")
    ]
    assert [] == offenders
