"""The sleepers report as CSV: streamed in batches, and safe to open in a spreadsheet — in both variants,
any value a learner controls that a spreadsheet would run as a formula is neutralised by the project's
one CSV writer (:mod:`sidecar.csvsafe`); ``excel`` only adds the BOM and separator Excel expects."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

from sidecar.csvsafe import SafeCsvWriter
from sidecar.monitor.service import SleeperRow


CSV_COLUMNS = ("user_id", "email", "login", "first_name", "last_name", "level_id", "level_name", "expired_on",
               "last_access_day", "days_since", "last_grant", "blocked", "reminders_sent")


def csv_record(row: SleeperRow) -> list[Any]:
    return [row.user_id, row.email, row.login, row.first_name, row.last_name, row.term_id, row.level_name,
            row.expired_on.isoformat(), row.last_access_day.isoformat(), row.days_since,
            row.last_grant.isoformat() if row.last_grant else "", 1 if row.blocked else 0, row.reminders_sent]


def csv_chunks(rows: Iterable[SleeperRow], *, excel: bool = False, batch: int = 200) -> Iterator[str]:
    """The export as text chunks: header first, then rows, a few hundred per chunk.

    ``excel``: a UTF-8 byte-order mark and ``;`` as separator (what Excel expects where the decimal
    comma is in use, e.g. Russian locales). In both variants, names and e-mails are typed by learners:
    text that would start a formula ("=HYPERLINK(...)") is neutralised; ids and counts stay numbers.
    """
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer, delimiter=";" if excel else ",", lineterminator="\r\n")
    if excel:
        buffer.write("\ufeff")
    writer.writerow(CSV_COLUMNS)
    pending = 0
    for row in rows:
        writer.writerow(csv_record(row))
        pending += 1
        if pending >= batch:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


