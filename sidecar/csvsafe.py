"""The one CSV writer of the project: every CSV we emit (downloads, CLI output) goes through it, so that
no cell a learner or an integrator controls opens as a formula in a spreadsheet (CSV injection).

Rule (OWASP "CSV Injection"): a **text** cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return — or with the full-width ``＝ ＋ － ＠``, which some spreadsheets read as their ASCII
forms — is prefixed with a single quote, so the spreadsheet shows it as text. Numbers we put in the
row ourselves (``int``, ``float``, ``Decimal``: ids, counts, a negative number of days) are written as
numbers, never quoted: only values of a numeric type are trusted, a string that looks like a number
("-5" typed as a login) is still text and still neutralised. ``None`` is an empty cell; anything else
is written as its ``str()`` and treated as text.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Protocol

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


class _Writable(Protocol):
    def write(self, s: str, /) -> Any: ...


def defuse(value: Any) -> Any:
    """The value as it may go into a CSV cell: numbers unchanged, text neutralised when it starts a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, Decimal)):
        return value
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def defuse_text(value: str | None) -> str:
    """:func:`defuse` for a cell known to hold text (or None): the same result, a few steps fewer per cell."""
    if value is None:
        return ""
    return "'" + value if value.startswith(FORMULA_START) else value


class SafeCsvWriter:
    """``csv.writer`` whose rows are passed through :func:`defuse` (the header too: it is text as well)."""

    def __init__(self, target: _Writable, *, delimiter: str = ",", lineterminator: str = "\r\n") -> None:
        self._writer = csv.writer(target, delimiter=delimiter, lineterminator=lineterminator)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([defuse(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)

    def writerows_defused(self, rows: Iterable[Iterable[Any]]) -> None:
        """Rows whose cells the caller made safe already, for exports of hundreds of thousands of rows: every
        cell that holds text from outside went through :func:`defuse_text` (or :func:`defuse`); the others
        are numbers or text the caller formatted itself that cannot start a formula (ISO dates)."""
        self._writer.writerows(rows)
