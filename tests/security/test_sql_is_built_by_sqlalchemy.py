"""SQL is built only through SQLAlchemy expressions: the few textual statements of the service are
constant strings (health probes, doctor's diagnostics), never assembled from values, so no input
can reach a query except as a bound parameter."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "sidecar"
TEXTUAL = {"text", "exec_driver_sql", "execute"}


def _textual_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TEXTUAL:
            yield node


def test_textual_sql_is_only_ever_a_constant_string():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if "devstack" in path.parts:   # the emulator plays WordPress; it is not the service
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _textual_calls(tree):
            if not call.args:
                continue
            first = call.args[0]
            if call.func.attr in ("text", "exec_driver_sql") and not (
                    isinstance(first, ast.Constant) and isinstance(first.value, str)):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{call.lineno}")
            # execute() with a string built at run time would be raw SQL as well.
            if call.func.attr == "execute" and isinstance(first, (ast.JoinedStr, ast.BinOp)):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{call.lineno}")
    assert offenders == [], f"SQL assembled from values: {offenders}"
