"""The emulator is written from core.md alone: it must not borrow the sidecar's own rules."""

from __future__ import annotations

import ast
from pathlib import Path

import sidecar.devstack

FORBIDDEN = ("sidecar.domain", "sidecar.memberlux", "sidecar.bridge", "sidecar.monitor", "sidecar.reminders",
             "sidecar.programs")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_devstack_imports_none_of_the_sidecars_rules():
    folder = Path(sidecar.devstack.__file__).parent
    offenders = {path.name: sorted(name for name in _imports(path) if name.startswith(FORBIDDEN))
                 for path in sorted(folder.glob("*.py"))}
    assert {name: found for name, found in offenders.items() if found} == {}
