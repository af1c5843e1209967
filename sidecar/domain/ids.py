"""Numbers from outside, checked before they reach a database: ids are positive and fit the columns.

Every id column of the store and of WordPress is at most a signed 64-bit integer (``BIGINT``;
WordPress's own ids are ``BIGINT UNSIGNED`` but never pass 2**63-1). A larger number is no id of
anything: SQLite cannot even bind it (OverflowError) and MariaDB refuses it (DataError), which was a
500. So the edge refuses it with a 4xx naming the field, and a lookup treats it as "no such row".
"""

from __future__ import annotations

import re
from typing import Any

MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")


def whole_number(raw: Any) -> int | None:
    """An integer from JSON or a form: an ``int`` (not ``bool``), an integral float, or ASCII digits with
    an optional sign; ``None`` for anything else (NaN, infinities, "1e308", "0x10", "1_000", "٣")."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None      # NaN and infinities are not integers
    if isinstance(raw, str):
        text = raw.strip()
        sign, digits = (text[0], text[1:]) if text[:1] in ("-", "+") else ("", text)
        if _DIGITS.fullmatch(digits) and len(digits) <= 40:
            return int(sign + digits)
    return None


def is_id(value: int | None) -> bool:
    """True for a positive integer that fits a signed 64-bit column."""
    return value is not None and 0 < value <= MAX_ID

