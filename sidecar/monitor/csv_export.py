"""The sleepers report as CSV: streamed in batches, and safe to open in a spreadsheet — in both variants,
any value a learner controls that a spreadsheet would run as a formula is neutralised by the project's
one CSV writer (:mod:`sidecar.csvsafe`); ``excel`` only adds the BOM and separator Excel expects."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from datetime import date, timedelta

from sidecar.csvsafe import SafeCsvWriter, defuse_text
from sidecar.monitor.service import MonitorService, SleeperQuery, SleeperRow


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



def export_chunks(service: MonitorService, q: SleeperQuery, *, day: date | None = None, excel: bool = False,
                  limit: int | None = None) -> Iterator[str]:
    """The export of every sleeper matching ``q`` (at most ``limit``), exactly as :func:`csv_chunks` writes
    :meth:`MonitorService.iterate`'s rows, but at the speed of the disk.

    The stored report is read as plain tuples through one server-side cursor
    (:meth:`MonitorService.stream`) and written a few thousand rows per call: only the cells a learner
    types (names, e-mail, login) and the level names go through the formula guard (ids, counts and ISO
    dates cannot start a formula), dates are formatted once per distinct day. A day the report was not
    built for is evaluated live and written row by row, as before.
    """
    batches = service.stream(q, day=day, limit=limit)
    if batches is None:
        rows = service.iterate(q, day=day)
        return csv_chunks(itertools.islice(rows, limit) if limit else rows, excel=excel)
    return _stream_chunks(batches, service.level_names(), day or service.runtime.clock.today_utc(), excel)


def _stream_chunks(batches: Iterator[Any], names: dict[int, str], today: date, excel: bool) -> Iterator[str]:
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer, delimiter=";" if excel else ",", lineterminator="\r\n")
    if excel:
        buffer.write("\ufeff")
    writer.writerow(CSV_COLUMNS)
    _text = defuse_text
    levels: dict[int, str] = {}
    days: dict[str, tuple[str, int]] = {}   # expiry (ISO) -> (last access day, days since)
    one_day = timedelta(days=1)
    for batch in batches:
        records = []
        for user_id, email, login, first_name, last_name, term_id, expired_on, last_grant, blocked, sent in batch:
            level = levels.get(term_id)
            if level is None:
                level = levels[term_id] = _text(names.get(term_id, f"#{term_id}"))
            when = days.get(expired_on)
            if when is None:
                day = date.fromisoformat(expired_on)
                when = days[expired_on] = ((day - one_day).isoformat(), (today - day).days)
            records.append((user_id, _text(email), _text(login), _text(first_name), _text(last_name), term_id, level,
                            expired_on, when[0], when[1], last_grant or "", 1 if blocked else 0, sent))
        writer.writerows_defused(records)   # text from outside went through _text above
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
