"""docs/security.md names the tests that prove each claim: every one of them must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"

# `tests/x/test_y.py::test_name`, then `…::other_name` for more tests of the same file.
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py|…)(?:::(\w+))?")


def _references() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        current: str | None = None
        for path, name in _REFERENCE.findall(line):
            if path != "…":
                current = path
            assert current is not None, f"'…::{name}' without a file before it: {line[:120]}"
            found.append((current, name or None))
    return found


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_security_review_names_exists():
    references = _references()
    assert len(references) >= 40, "the review names its tests"
    missing = []
    for path, name in references:
        file = ROOT / path
        if not file.exists():
            missing.append(path)
        elif name and name not in _test_names(file):
            missing.append(f"{path}::{name}")
    assert missing == []
