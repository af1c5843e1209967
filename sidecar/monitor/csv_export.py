"""The sleepers report as CSV: streamed in batches, and safe to open in a spreadsheet — any value a learner
controls that a spreadsheet would run as a formula is neutralised (``excel`` adds the BOM and separator
Excel expects)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

from sidecar.monitor.service import SleeperRow


CSV_COLUMNS = ("user_id", "email", "login", "first_name", "last_name", "level_id", "level_name", "expired_on",
               "last_access_day", "days_since", "last_grant", "blocked", "reminders_sent")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_record(row: SleeperRow) -> list[Any]:
    return [row.user_id, row.email, row.login, row.first_name, row.last_name, row.term_id, row.level_name,
            row.expired_on.isoformat(), row.last_access_day.isoformat(), row.days_since,
            row.last_grant.isoformat() if row.last_grant else "", 1 if row.blocked else 0, row.reminders_sent]


def _defuse(value: Any) -> Any:
    # Names and e-mails are typed by learners: in a spreadsheet "=HYPERLINK(...)" would run as a formula.
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_chunks(rows: Iterable[SleeperRow], *, excel: bool = False, batch: int = 200) -> Iterator[str]:
    """The export as text chunks: header first, then rows, a few hundred per chunk.

    ``excel``: a UTF-8 byte-order mark and ``;`` as separator (what Excel expects where the decimal
    comma is in use, e.g. Russian locales), and cells that would start a formula are neutralised.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";" if excel else ",", lineterminator="\r\n")
    if excel:
        buffer.write("\ufeff")
    writer.writerow(CSV_COLUMNS)
    pending = 0
    for row in rows:
        record = csv_record(row)
        writer.writerow([_defuse(v) for v in record] if excel else record)
        pending += 1
        if pending >= batch:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


