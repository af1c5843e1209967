"""Running the shipped SQL scripts (``sql/*.sql``) from Python: tests, benchmarks, operators' tools.

The scripts are plain MySQL with user variables in a header that an administrator edits; here the
header values are substituted the same way and the statements run one by one.
"""

from __future__ import annotations

import re
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


def split_statements(script: str) -> list[str]:
    """Split on ';' outside quotes and comments (the scripts use no DELIMITER changes)."""
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(script):
        ch = script[i]
        if quote:
            current.append(ch)
            if ch == "\\" and quote != "`" and i + 1 < len(script):
                current.append(script[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
            current.append(ch)
        elif script.startswith("-- ", i) or ch == "#":
            end = script.find("\n", i)
            i = len(script) if end == -1 else end
            continue
        elif ch == ";":
            statement = "".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
        else:
            current.append(ch)
        i += 1
    if "".join(current).strip():
        raise ValueError("the script ends with a statement without a terminating ';'")
    return statements


def render(script: str, **values: str) -> str:
    """Set the header variables (``SET @name = '...';``) the way an administrator edits them."""
    for name, value in values.items():
        if "'" in value or "\\" in value:
            raise ValueError(f"@{name}: quotes and backslashes are not allowed")
        script, count = re.subn(rf"^SET @{name} = '[^']*';", f"SET @{name} = '{value}';", script, flags=re.M)
        if count != 1:
            raise ValueError(f"@{name} not found in the script header")
    return script


def run_script(cursor, script: str) -> None:  # a DB-API cursor
    for statement in split_statements(script):
        cursor.execute(statement)
