"""The import graph of the product packages points one way: consumers -> monitor -> clmlf.

Every import statement of every module is read with ``ast`` (top-level and function-local imports
alike), so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package -> packages it must never import
FORBIDDEN = {
    "clmlf": ("consumers", "monitor"),
    "monitor": ("consumers",),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_imported_modules_sees_local_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from consumers.cli import main\n    import monitor.store\n")
    assert imported_modules(module) == [(1, "os"), (4, "consumers.cli"), (5, "monitor.store")]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_never_imports_upwards(package):
    modules = sorted((REPO / package).rglob("*.py"))
    assert modules, f"no modules found under {package}/"
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in modules
        for line, name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert offences == [], f"{package}/ must not import {', '.join(FORBIDDEN[package])}"
