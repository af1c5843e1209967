"""The read side of the learning monitor: what the UI, the CSV/JSON export, the API and the CLI show.

Lists come from the read model (``mls_sleepers``), so a page never touches the WordPress tables
whatever their size; level names are the one exception, read from WordPress and cached briefly. A list
asked for a UTC day the read model was not built for (``day=``) is the exception: its levels are
evaluated live, with the refresh's own evaluation, and paged in memory in the same order with the same
cursors.
Pages use keyset pagination: the cursor carries the sort key of the last row plus ``(user_id,
term_id)``, a tie-breaker unique per row, so pages never repeat or skip a row even when many rows share
an expiry day, and a page costs the same at row 10 or at row 100 000.

:meth:`MonitorService.explain` is different on purpose: it recomputes one verdict live, from the
MemberLux rows and the domain rule, and shows the rows behind it, so an administrator can check a
surprising listing (or a missing one) against the data as it is now.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sidecar.config import SLEEPER_SORTS, sleepers_order
from sidecar.domain.ids import is_id
from sidecar.domain.access import (
    KEY_STATUS_NEW,
    KeyRow,
    access_periods,
    activation_day,
    effective_status,
    has_access_on,
    is_basket,
    qualifying_rows,
)
from sidecar.domain.reminder_chain import ChainStatus
from sidecar.domain.sleepers import Reason, SleeperVerdict, evaluate
from sidecar.memberlux.reader import WpUser, ancestors_from_parents
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.store.monitor_models import CertificateClassRow, SleeperCount, SleeperEntry, SleeperRefresh

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = [
    "SORTS",
    "MAX_LIMIT",
    "SleeperQuery",
    "SleeperRow",
    "SleeperPage",
    "TrendPoint",
    "LevelFreshness",
    "KeyFact",
    "CertificateFact",
    "ReadModelState",
    "Explanation",
    "UnknownUser",
    "UnknownLevel",
    "MonitorService",
]

SORTS = SLEEPER_SORTS
MAX_LIMIT = 1000
#: The longest "expired in the last N days" window the service takes (the page offers 7, 30 and 90).
MAX_WITHIN_DAYS = 36600
_LEVEL_CACHE_SECONDS = 60.0
_CURSOR_VERSION = 2   # 2: the expiry order breaks ties by level, then user
_ONE_DAY = timedelta(days=1)
#: How long MariaDB keeps an export's unread rows waiting while the reader (e.g. a paused download) is away.
STREAM_WRITE_TIMEOUT_SECONDS = 3600


# --------------------------------------------------------------------------------------------------
# Query and result types


@dataclass(frozen=True)
class SleeperQuery:
    levels: tuple[int, ...] = ()
    expired_from: date | None = None
    expired_to: date | None = None
    search: str = ""
    sort: str = "expired_on"
    descending: bool = False
    after: str | None = None
    limit: int = 20
    #: The page before this cursor (the first row of the page after it): "previous page".
    before: str | None = None
    #: Only expiries in the last N days, counted back from the UTC day evaluated: days since expiry ≤ N.
    expired_within: int | None = None


@dataclass(frozen=True)
class SleeperRow:
    user_id: int
    email: str
    login: str
    first_name: str
    last_name: str
    term_id: int
    level_name: str
    expired_on: date          # X: first day without access
    last_access_day: date     # X - 1
    days_since: int           # today - X
    last_grant: date | None
    blocked: bool             # shown flagged, never mailed
    reminders_sent: int
    #: Where the reminder chain of this expiry stands (pages only; the exports leave it out).
    chain: ChainStatus | None = None


class TrendPoint(NamedTuple):
    day: date
    sleepers: int
    reconstructed: bool = False   # rebuilt from key dates, not counted by a refresh


@dataclass
class SleeperPage:
    rows: list[SleeperRow]
    next_cursor: str | None
    total: int
    prev_cursor: str | None = None
    page_number: int = 1      # 1-based: rows before this page // page size + 1
    pages: int = 1            # at least 1, even when nothing matches


@dataclass(frozen=True, slots=True)
class _Evaluated:
    """A sleeper as the read model would store them, evaluated live for a day it was not built for."""

    term_id: int
    user_id: int
    expired_on: date
    last_grant: date | None
    blocked: bool
    email: str
    login: str
    first_name: str
    last_name: str
    search_text: str


#: Levels evaluated so far and in all: ``(done, total)``.
LevelProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class _LiveList:
    matching: list[_Evaluated]               # every sleeper that passes the filters, in order
    start: int                               # where the cursor's page starts in ``matching``
    names: Mapping[int, str]
    key: Callable[[_Evaluated], list[Any]]   # the sort key, as a cursor carries it


@dataclass(frozen=True)
class LevelFreshness:
    term_id: int
    evaluated_for: date       # the UTC day D the rule was evaluated for
    refreshed_at: datetime
    seconds: float
    rows_scanned: int
    users_considered: int
    sleepers: int
    reasons: dict[str, int]
    stale: bool               # evaluated for a day before today
    #: When the level was last known current (its rebuild or a later change scan).
    checked_at: datetime | None = None

    @property
    def current_as_of(self) -> datetime:
        return self.checked_at or self.refreshed_at


@dataclass(frozen=True)
class KeyFact:
    """One key row as the rule saw it."""

    key_id: int
    term_id: int | None
    status: str
    key_type: str
    basket: bool
    banned: bool
    unlimited: bool
    duration: int
    units: str
    date_start: date | None
    date_end: date | None
    date_registered: date | None
    activated_on: date | None
    counts: bool              # part of R(U,T)
    active_on_day: bool       # opens the level on the evaluation day
    note: str                 # why the row does not count ('' when it does)


@dataclass(frozen=True)
class CertificateFact:
    certificate_id: int
    level_id: int
    cls: str                  # auto | manual
    reason: str
    date_issue: date | None
    create_date: date | None
    responsible_person: int | None
    deleted: bool


@dataclass(frozen=True)
class ReadModelState:
    listed: bool
    expired_on: date | None
    refreshed_at: datetime | None
    evaluated_for: date | None


@dataclass(frozen=True)
class Explanation:
    user: WpUser
    term_id: int
    level_name: str
    day: date
    verdict: SleeperVerdict
    keys: tuple[KeyFact, ...]
    ancestors: tuple[tuple[int, str], ...]      # (term_id, name), nearest first
    ancestor_keys: tuple[KeyFact, ...]
    certificates: tuple[CertificateFact, ...]
    certificates_available: bool
    has_manual_certificate: bool
    read_model: ReadModelState
    include_basket: bool
    check_ancestors: bool = True
    #: With access on the day (``active``): the end of the unbroken access that holds the day (stacked
    #: renewals included), i.e. its first day without access.
    access_until: date | None = None
    #: Access paid ahead after a gap (``renewed``, or ``active`` with a gap ahead): the first day the level
    #: opens again.
    access_resumes: date | None = None

    @property
    def reason(self) -> str:
        return self.verdict.reason.value

    @property
    def is_sleeper(self) -> bool:
        return self.verdict.is_sleeper

    @property
    def summary(self) -> str:
        return _summary(self)


class UnknownUser(LookupError):
    """No WordPress user matches the id or e-mail given."""


class UnknownLevel(LookupError):
    """The access level does not exist (never did, or was deleted)."""


# --------------------------------------------------------------------------------------------------
# Sorting and cursors


@dataclass(frozen=True)
class _Order:
    columns: tuple[sa.ColumnElement, ...]
    kinds: tuple[str, ...]            # how each cursor value is encoded: date | str | int
    ascending: bool


_E = SleeperEntry


def _order_for(sort: str, descending: bool, level_rank: sa.ColumnElement) -> _Order:
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}; expected one of {', '.join(SORTS)}")
    if sort in ("expired_on", "days_since"):
        # More days since expiry = an earlier expiry: days_since ascending is expired_on descending.
        ascending = (not descending) if sort == "expired_on" else descending
        # (expired_on, term_id, user_id): the order of ix_mls_sleepers_expiry_all, so a page of every level
        # reads the index instead of sorting the whole table (and of ix_mls_sleepers_expiry for one level).
        return _Order((_E.expired_on, _E.term_id, _E.user_id), ("date", "int", "int"), ascending)
    if sort == "name":
        return _Order((_E.last_name, _E.first_name, _E.user_id, _E.term_id), ("str", "str", "int", "int"),
                      not descending)
    if sort == "email":
        return _Order((_E.email, _E.user_id, _E.term_id), ("str", "int", "int"), not descending)
    return _Order((level_rank, _E.expired_on, _E.user_id, _E.term_id), ("int", "date", "int", "int"),
                  not descending)


def _encode_cursor(sort: str, descending: bool, values: Sequence[Any]) -> str:
    key = [v.isoformat() if isinstance(v, date) else v for v in values]
    payload = json.dumps({"v": _CURSOR_VERSION, "s": sort, "d": bool(descending), "k": key}, separators=(",", ":"),
                         ensure_ascii=False)
    return base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str, sort: str, descending: bool, kinds: Sequence[str]) -> list[Any]:
    def bad(why: str) -> ValueError:
        return ValueError(f"invalid cursor: {why}; start again from the first page")

    if not isinstance(cursor, str) or not cursor or len(cursor) > 2000:
        raise bad("empty or too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad("not a cursor issued by this service") from None
    if not isinstance(payload, dict) or payload.get("v") != _CURSOR_VERSION:
        raise bad("unknown format")
    if payload.get("s") != sort or payload.get("d") is not bool(descending):
        raise bad(f"it was issued for another order (sort {payload.get('s')!r}, "
                  f"descending {payload.get('d')!r})")
    key = payload.get("k")
    if not isinstance(key, list) or len(key) != len(kinds):
        raise bad("wrong number of sort values")
    values: list[Any] = []
    for kind, value in zip(kinds, key, strict=True):
        if kind == "date":
            try:
                values.append(date.fromisoformat(value))
            except (TypeError, ValueError):
                raise bad(f"{value!r} is not a date") from None
        elif kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad(f"{value!r} is not an integer")
            values.append(value)
        else:
            if not isinstance(value, str):
                raise bad(f"{value!r} is not text")
            values.append(value)
    return values


def _after(columns: Sequence[sa.ColumnElement], values: Sequence[Any], ascending: bool) -> sa.ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``columns`` (expanded, so every backend indexes it)."""
    alternatives = []
    for i, column in enumerate(columns):
        equal = [columns[j] == values[j] for j in range(i)]
        step = column > values[i] if ascending else column < values[i]
        alternatives.append(sa.and_(*equal, step))
    return sa.or_(*alternatives)


# --------------------------------------------------------------------------------------------------
# The service


class MonitorService:
    def __init__(self, runtime: Runtime, *, check_ancestors: bool = True) -> None:
        self.runtime = runtime
        self.check_ancestors = check_ancestors
        self._levels_cache: tuple[float, dict[int, str], dict[int, int]] | None = None

    # --- levels ------------------------------------------------------------------------------------

    def level_names(self) -> dict[int, str]:
        """``{term_id: name}`` of the existing levels (cached for a minute)."""
        return self._levels()[0]

    def _levels(self) -> tuple[dict[int, str], dict[int, int]]:
        now = time.monotonic()
        if self._levels_cache is None or now - self._levels_cache[0] > _LEVEL_CACHE_SECONDS:
            levels = self.runtime.reader.levels()
            names = {lv.term_id: lv.name for lv in levels}
            ordered = sorted(levels, key=lambda lv: (lv.name.casefold(), lv.term_id))
            ranks = {lv.term_id: rank for rank, lv in enumerate(ordered)}
            self._levels_cache = (now, names, ranks)
        return self._levels_cache[1], self._levels_cache[2]

    def _level_rank(self, ranks: Mapping[int, int]) -> sa.ColumnElement:
        # Deleted levels (rows not yet dropped by a refresh) sort last.
        if not ranks:
            return sa.literal(0)
        return sa.case(ranks, value=_E.term_id, else_=len(ranks))

    # --- lists -------------------------------------------------------------------------------------

    def _today(self) -> date:
        return self.runtime.clock.today_utc()

    def default_order(self) -> tuple[str, bool]:
        """The list's order when none is asked for, ``(sort, descending)``: ``web.sleepers_order``."""
        return sleepers_order(self.runtime.settings.web.sleepers_order)

    def _filters(self, q: SleeperQuery, day: date | None = None) -> list[sa.ColumnElement[bool]]:
        conditions: list[sa.ColumnElement[bool]] = []
        if q.levels:
            conditions.append(_E.term_id.in_([int(t) for t in q.levels]))
        if q.expired_from is not None:
            conditions.append(_E.expired_on >= q.expired_from)
        if q.expired_to is not None:
            # The rule never lists a future expiry: the end of the window is clamped to the day (UTC).
            conditions.append(_E.expired_on <= min(q.expired_to, day or self._today()))
        within = self._within_start(q, day)
        if within is not None:
            conditions.append(_E.expired_on >= within)
        for token in (q.search or "").lower().split():
            conditions.append(_E.search_text.contains(token, autoescape=True))
        return conditions

    def _within_start(self, q: SleeperQuery, day: date | None) -> date | None:
        """The first expiry day of "expired in the last N days": N UTC days before the day evaluated, so a
        learner whose first day without access was exactly N days ago is listed, N + 1 days ago is not."""
        if q.expired_within is None:
            return None
        return (day or self._today()) - timedelta(days=q.expired_within)

    def _check(self, q: SleeperQuery, limit: int) -> None:
        if q.sort not in SORTS:
            raise ValueError(f"unknown sort {q.sort!r}; expected one of {', '.join(SORTS)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        if q.after and q.before:
            raise ValueError("give one cursor: after (next page) or before (previous page), not both")
        if q.expired_within is not None and not 0 <= q.expired_within <= MAX_WITHIN_DAYS:
            raise ValueError(f"expired within must be between 0 and {MAX_WITHIN_DAYS} days, got {q.expired_within}")

    @staticmethod
    def _fetch(session: Session, conditions: Sequence[sa.ColumnElement[bool]], order: _Order,
               after: list[Any] | None, limit: int) -> tuple[list[SleeperEntry], bool]:
        stmt = sa.select(_E).where(*conditions)
        if after is not None:
            stmt = stmt.where(_after(order.columns, after, order.ascending))
        stmt = stmt.order_by(*(c.asc() if order.ascending else c.desc() for c in order.columns)).limit(limit + 1)
        entries = list(session.scalars(stmt))
        return entries[:limit], len(entries) > limit

    def _key_of(self, entry: SleeperEntry | _Evaluated, sort: str, ranks: Mapping[int, int]) -> list[Any]:
        if sort in ("expired_on", "days_since"):
            return [entry.expired_on, entry.term_id, entry.user_id]
        if sort == "name":
            return [entry.last_name, entry.first_name, entry.user_id, entry.term_id]
        if sort == "email":
            return [entry.email, entry.user_id, entry.term_id]
        return [ranks.get(entry.term_id, len(ranks)), entry.expired_on, entry.user_id, entry.term_id]

    def _rows(self, session: Session, entries: Sequence[SleeperEntry | _Evaluated], names: Mapping[int, str],
              day: date | None = None, *, with_chain: bool = False) -> list[SleeperRow]:
        from sidecar.monitor.chains import chains_of

        today = day or self._today()
        chains = chains_of(self.runtime, session, entries, today, with_status=with_chain)
        rows = []
        for e in entries:
            chain = chains[(e.user_id, e.term_id, e.expired_on)]
            rows.append(SleeperRow(
                user_id=e.user_id, email=e.email, login=e.login, first_name=e.first_name,
                last_name=e.last_name, term_id=e.term_id, level_name=names.get(e.term_id, f"#{e.term_id}"),
                expired_on=e.expired_on, last_access_day=e.expired_on - _ONE_DAY,
                days_since=(today - e.expired_on).days, last_grant=e.last_grant, blocked=bool(e.blocked),
                reminders_sent=chain.sent, chain=chain.status,
            ))
        return rows

    def stored_for(self, day: date, levels: Sequence[int] = ()) -> bool:
        """Whether the read model holds the sleepers of UTC day ``day`` for these levels (default: every
        existing level): each of them was last rebuilt for that day."""
        wanted = set(levels) or set(self.level_names())
        with self.runtime.sessions() as session:
            built = dict(session.execute(sa.select(SleeperRefresh.term_id, SleeperRefresh.evaluated_for)).tuples().all())
        return all(built.get(term_id) == day for term_id in wanted)

    @staticmethod
    def _paged(q: SleeperQuery, rows: list[SleeperRow], keys: Sequence[list[Any]], total: int, preceding: int,
               more: bool) -> SleeperPage:
        """A page with its cursors and its place: ``preceding`` rows come before it, ``more`` after it."""
        pages = max(1, -(-total // q.limit))
        return SleeperPage(
            rows=rows,
            next_cursor=_encode_cursor(q.sort, q.descending, keys[-1]) if more and keys else None,
            total=total,
            prev_cursor=_encode_cursor(q.sort, q.descending, keys[0]) if preceding and keys else None,
            page_number=min(preceding // q.limit + 1, pages),
            pages=pages,
        )

    def page(self, q: SleeperQuery, *, day: date | None = None, progress: LevelProgress | None = None) -> SleeperPage:
        """One page of sleepers, the total matching the filters and the page's place among them.

        ``q.after`` pages forwards, ``q.before`` backwards (both keyset cursors of this service); a page
        going back that would hold fewer rows than a page (rows left the list since) is the first page.
        ``day`` (UTC): the sleepers as of that day, from the read model when it was built for that day
        (:meth:`stored_for`), else evaluated live (``progress`` follows the levels). Without it, the read
        model as last rebuilt.
        """
        self._check(q, q.limit)
        if day is not None and not self.stored_for(day, q.levels):
            return self._live_page(q, day, progress)
        names, ranks = self._levels()
        order = _order_for(q.sort, q.descending, self._level_rank(ranks))
        after = _decode_cursor(q.after, q.sort, q.descending, order.kinds) if q.after else None
        before = _decode_cursor(q.before, q.sort, q.descending, order.kinds) if q.before else None
        conditions = self._filters(q, day)
        backwards = _Order(order.columns, order.kinds, not order.ascending)
        with self.runtime.sessions() as session:
            if before is not None:
                entries, _ = self._fetch(session, conditions, backwards, before, q.limit)
                entries.reverse()
                if len(entries) < q.limit:
                    entries, _ = self._fetch(session, conditions, order, None, q.limit)
            else:
                entries, _ = self._fetch(session, conditions, order, after, q.limit)
            total = self._count(session, conditions)
            if not entries and after is not None and total:
                # A link past the end (rows left the list since): the last page, as paging forwards ends.
                entries, _ = self._fetch(session, conditions, backwards, None, _last_page_rows(total, q.limit))
                entries.reverse()
            keys = [self._key_of(e, q.sort, ranks) for e in entries]
            preceding, more = 0, False
            if keys:
                # Counted, not carried in the link: "page N" stays true when rows came or went.
                preceding = self._count(session, [*conditions, _after(order.columns, keys[0], not order.ascending)])
                more = session.scalar(sa.select(sa.literal(1)).select_from(_E).where(
                    *conditions, _after(order.columns, keys[-1], order.ascending)).limit(1)) is not None
            rows = self._rows(session, entries, names, day, with_chain=True)
        return self._paged(q, rows, keys, total, preceding, more)

    @staticmethod
    def _count(session: Session, conditions: Sequence[sa.ColumnElement[bool]]) -> int:
        return int(session.scalar(sa.select(sa.func.count()).select_from(_E).where(*conditions)) or 0)

    def iterate(self, q: SleeperQuery, chunk: int = 1000, *, day: date | None = None,
                progress: LevelProgress | None = None) -> Iterator[SleeperRow]:
        """Every sleeper matching ``q`` in its order, read in keyset chunks (for streaming exports).

        ``q.limit`` and ``q.before`` are ignored; ``q.after`` is honoured; ``day`` as in :meth:`page`.
        Each chunk is its own short read, so no store connection stays open while the caller writes the
        export. Rows carry the letters sent, not the chain's state (a page's detail).
        """
        q = replace(q, before=None)
        self._check(q, chunk)
        if day is not None and not self.stored_for(day, q.levels):
            yield from self._live_iterate(q, chunk, day, progress)
            return
        names, ranks = self._levels()
        order = _order_for(q.sort, q.descending, self._level_rank(ranks))
        after = _decode_cursor(q.after, q.sort, q.descending, order.kinds) if q.after else None
        conditions = self._filters(q, day)
        while True:
            with self.runtime.sessions() as session:
                entries, more = self._fetch(session, conditions, order, after, chunk)
                rows = self._rows(session, entries, names, day)
            yield from rows
            if not more or not entries:
                return
            after = self._key_of(entries[-1], q.sort, ranks)

    #: The columns :meth:`stream` yields, in this order (the two days as ISO text, ``blocked`` as 0/1).
    STREAM_COLUMNS = ("user_id", "email", "login", "first_name", "last_name", "term_id", "expired_on",
                      "last_grant", "blocked", "reminders_sent")

    def stream(self, q: SleeperQuery, *, day: date | None = None, limit: int | None = None,
               batch: int = 5000) -> Iterator[Sequence[Any]] | None:
        """Every stored sleeper matching ``q``, in :meth:`iterate`'s order and with its letters sent, as
        plain tuples (:attr:`STREAM_COLUMNS`) in batches of ``batch``: one statement read through a
        server-side cursor, for exports of the whole read model at the speed of the disk.

        None when the rows must be evaluated live (``day`` the read model was not built for): then
        :meth:`iterate` is the way. The store connection stays open until the iterator is exhausted or
        closed. ``q.limit`` and ``q.before`` are ignored (``limit``: at most that many rows); ``q.after`` is
        honoured, as in :meth:`iterate`.
        """
        from sidecar.domain.reminders import LEARNER_STEPS, State
        from sidecar.store.reminder_models import Reminder

        q = replace(q, before=None)
        self._check(q, 1)
        if day is not None and not self.stored_for(day, q.levels):
            return None
        _names, ranks = self._levels()
        order = _order_for(q.sort, q.descending, self._level_rank(ranks))
        after = _decode_cursor(q.after, q.sort, q.descending, order.kinds) if q.after else None
        conditions = self._filters(q, day)
        if after is not None:
            conditions.append(_after(order.columns, after, order.ascending))
        r = Reminder
        # A chain's letters sent, as chains_of counts them: learner steps in state "sent".
        sent = (sa.select(sa.func.count()).where(
            r.user_id == _E.user_id, r.term_id == _E.term_id, r.expired_on == _E.expired_on,
            r.step.in_(LEARNER_STEPS), r.state == State.SENT.value).scalar_subquery())
        # Days as ISO text and the flag as a number: what the CSV writes, without a date object per cell.
        stmt = (sa.select(_E.user_id, _E.email, _E.login, _E.first_name, _E.last_name, _E.term_id,
                          sa.cast(_E.expired_on, sa.String(10)), sa.cast(_E.last_grant, sa.String(10)),
                          sa.type_coerce(_E.blocked, sa.Integer), sent)
                .where(*conditions)
                .order_by(*(c.asc() if order.ascending else c.desc() for c in order.columns)))
        if limit is not None:
            stmt = stmt.limit(limit)

        def batches() -> Iterator[Sequence[Any]]:
            with self.runtime.store_engine.connect() as conn:
                mysql = conn.dialect.name == "mysql"
                if mysql:
                    # The rows come as the reader takes them: a download the browser pauses pauses the
                    # reads, and MariaDB drops a result left unread for net_write_timeout (60 s by default).
                    conn.exec_driver_sql("SET SESSION net_write_timeout = 3600")  # STREAM_WRITE_TIMEOUT_SECONDS
                result = conn.execution_options(yield_per=batch).execute(stmt)
                try:
                    yield from result.partitions()
                finally:
                    result.close()
                    if mysql:   # the pooled connection goes back as it came
                        conn.exec_driver_sql("SET SESSION net_write_timeout = DEFAULT")

        return batches()

    # --- lists for a day the read model was not built for -----------------------------------------

    def _evaluate(self, q: SleeperQuery, day: date, progress: LevelProgress | None) -> list[_Evaluated]:
        """The sleepers of ``q``'s levels (default: all) on ``day``, by the refresh's own evaluation."""
        from sidecar.monitor.refresh import SleeperRefresher, search_text

        parents = self.runtime.reader.level_parents()
        level_ids = list(dict.fromkeys(q.levels)) or list(self.level_names())
        refresher = SleeperRefresher(self.runtime, check_ancestors=self.check_ancestors)
        found: list[_Evaluated] = []
        for done, term_id in enumerate(level_ids, start=1):
            if term_id in parents:  # a deleted level opens nothing: nobody sleeps in it
                evaluation = refresher.evaluate_level(term_id, day, parents=parents)
                for user_id, expired_on, last_grant, blocked, email, login, first, last in evaluation.sleepers:
                    found.append(_Evaluated(term_id, user_id, expired_on, last_grant, bool(blocked), email or "",
                                            login or "", first or "", last or "",
                                            search_text(first, last, email, login)))
            if progress is not None:
                progress(done, len(level_ids))
        return found

    def _live(self, q: SleeperQuery, day: date, progress: LevelProgress | None) -> _LiveList:
        """The evaluated sleepers that pass ``q``'s filters, in ``q``'s order: the read model's filters,
        order and cursors, applied in memory."""
        names, ranks = self._levels()
        order = _order_for(q.sort, q.descending, self._level_rank(ranks))
        # A bad cursor is refused before the levels are evaluated.
        after = _decode_cursor(q.after, q.sort, q.descending, order.kinds) if q.after else None
        before = _decode_cursor(q.before, q.sort, q.descending, order.kinds) if q.before else None
        tokens = (q.search or "").lower().split()
        window_end = min(q.expired_to, day) if q.expired_to is not None else None
        within = self._within_start(q, day)
        matching = [
            e for e in self._evaluate(q, day, progress)
            if (q.expired_from is None or e.expired_on >= q.expired_from)
            and (window_end is None or e.expired_on <= window_end)
            and (within is None or e.expired_on >= within)
            and all(token in e.search_text for token in tokens)
        ]

        def key(entry: _Evaluated) -> list[Any]:
            return self._key_of(entry, q.sort, ranks)

        def beyond(entry: _Evaluated, cursor: list[Any]) -> bool:
            return key(entry) > cursor if order.ascending else key(entry) < cursor

        def beyond_back(entry: _Evaluated, cursor: list[Any]) -> bool:
            return key(entry) < cursor if order.ascending else key(entry) > cursor

        matching.sort(key=key, reverse=not order.ascending)
        start = 0
        if after is not None:
            start = next((i for i, e in enumerate(matching) if beyond(e, after)), len(matching))
        elif before is not None:
            # The rows strictly before the cursor (a prefix of the sorted list); fewer than a page: the first.
            end = sum(1 for e in matching if beyond_back(e, before))
            start = end - q.limit if end >= q.limit else 0
        return _LiveList(matching, start, names, key)

    def _live_page(self, q: SleeperQuery, day: date, progress: LevelProgress | None) -> SleeperPage:
        live = self._live(q, day, progress)
        if q.after and live.matching and live.start == len(live.matching):   # past the end: the last page
            live = replace(live, start=len(live.matching) - _last_page_rows(len(live.matching), q.limit))
        shown = live.matching[live.start:live.start + q.limit]
        with self.runtime.sessions() as session:
            rows = self._rows(session, shown, live.names, day, with_chain=True)
        return self._paged(q, rows, [live.key(e) for e in shown], len(live.matching), live.start,
                           live.start + q.limit < len(live.matching))

    def _live_iterate(self, q: SleeperQuery, chunk: int, day: date,
                      progress: LevelProgress | None) -> Iterator[SleeperRow]:
        live = self._live(q, day, progress)
        for start in range(live.start, len(live.matching), chunk):
            with self.runtime.sessions() as session:
                rows = self._rows(session, live.matching[start:start + chunk], live.names, day)
            yield from rows

    # --- figures -----------------------------------------------------------------------------------

    def counts_per_level(self) -> dict[int, int]:
        """Sleepers per level in the read model; refreshed levels without sleepers show 0."""
        with self.runtime.sessions() as session:
            counts = {int(t): 0 for t in session.scalars(sa.select(SleeperRefresh.term_id))}
            stmt = sa.select(_E.term_id, sa.func.count()).group_by(_E.term_id)
            counts.update({int(t): int(n) for t, n in session.execute(stmt)})
        return dict(sorted(counts.items()))

    def trend(self, weeks: int = 12) -> dict[int, list[TrendPoint]]:
        """Daily sleeper counts per level over the last ``weeks`` weeks, oldest first: counted by a refresh,
        or reconstructed from key dates for the days before the first one (days without either are absent)."""
        if weeks < 1:
            raise ValueError("weeks must be at least 1")
        since = self._today() - timedelta(weeks=weeks)
        stmt = (
            sa.select(SleeperCount.term_id, SleeperCount.day, SleeperCount.sleepers, SleeperCount.reconstructed)
            .where(SleeperCount.day > since)
            .order_by(SleeperCount.term_id, SleeperCount.day)
        )
        result: dict[int, list[TrendPoint]] = {}
        with self.runtime.sessions() as session:
            for term_id, day, sleepers, reconstructed in session.execute(stmt):
                result.setdefault(int(term_id), []).append(TrendPoint(day, int(sleepers), bool(reconstructed)))
        return result

    def freshness(self) -> dict[int, LevelFreshness]:
        """When each level was last rebuilt and last known current, for which day, and what it took."""
        today = self._today()
        with self.runtime.sessions() as session:
            refreshes = list(session.scalars(sa.select(SleeperRefresh).order_by(SleeperRefresh.term_id)))
        return {
            r.term_id: LevelFreshness(
                term_id=r.term_id, evaluated_for=r.evaluated_for, refreshed_at=r.refreshed_at,
                seconds=r.seconds, rows_scanned=r.rows_scanned, users_considered=r.users_considered,
                sleepers=r.sleepers, reasons=dict(r.reasons or {}), stale=r.evaluated_for < today,
                checked_at=r.checked_at,
            )
            for r in refreshes
        }

    # --- one user, live ----------------------------------------------------------------------------

    def _find_user(self, user: int | str) -> WpUser:
        reader = self.runtime.reader
        if isinstance(user, bool):
            raise UnknownUser(f"not a user id or e-mail: {user!r}")
        if isinstance(user, int):
            found = reader.user(user) if is_id(user) else None    # no id column holds a larger number
            if found is None:
                raise UnknownUser(f"no WordPress user with id {user}")
            return found
        text = str(user).strip()
        if not text:
            raise UnknownUser("give a user id or an e-mail address")
        if text.isdecimal():
            if len(text) > 19 or not is_id(int(text)):
                raise UnknownUser(f"no WordPress user with id {text[:40]}")
            return self._find_user(int(text))
        if "@" not in text:
            raise UnknownUser(f"{text!r} is neither a user id nor an e-mail address")
        found = reader.user_by_email(text)
        if found is None:
            raise UnknownUser(f"no WordPress user with e-mail {text}")
        return found

    def explain(self, user: int | str, term_id: int, day: date | None = None) -> Explanation:
        """The verdict for one user and level on ``day`` (default today, UTC), recomputed live.

        Raises :class:`UnknownUser` or :class:`UnknownLevel` (both ``LookupError``) with a message fit
        for the operator.
        """
        reader = self.runtime.reader
        day = day or self._today()
        wp_user = self._find_user(user)
        parents = reader.level_parents()
        if term_id not in parents:
            raise UnknownLevel(f"no access level with id {term_id} (it may have been deleted)")
        level_names = {lv.term_id: lv.name for lv in reader.levels()}
        ancestors = ancestors_from_parents(parents, term_id) if self.check_ancestors else []
        rows = reader.key_rows(wp_user.id, [term_id])
        ancestor_rows = reader.key_rows(wp_user.id, ancestors) if ancestors else []

        classifier = CertificateClassifier(self.runtime)
        with self.runtime.sessions() as session:
            cert_rows = list(session.scalars(
                sa.select(CertificateClassRow)
                .where(CertificateClassRow.level_id == term_id, CertificateClassRow.user_id == wp_user.id)
                .order_by(CertificateClassRow.certificate_id)))
            entry = session.get(SleeperEntry, (term_id, wp_user.id))
            refresh = session.get(SleeperRefresh, term_id)
        certificates = tuple(
            CertificateFact(c.certificate_id, c.level_id, c.cls, c.reason, c.date_issue, c.create_date,
                            c.responsible_person, c.deleted_at is not None)
            for c in cert_rows
        )
        # Same source and same conditions as the refresh (the classifier's manual set).
        has_manual = classifier.available and any(c.cls == "manual" and not c.deleted for c in certificates)
        policy = self.runtime.access_policy
        verdict = evaluate(wp_user.id, term_id, rows, day, ancestor_rows=ancestor_rows,
                           has_manual_certificate=has_manual, blocked=wp_user.blocked, user_exists=True,
                           policy=policy, check_ancestors=self.check_ancestors)
        periods = access_periods(rows, policy) if verdict.reason in (Reason.ACTIVE, Reason.RENEWED) else []
        access_until = next((p.end for p in periods if p.contains(day)), None)
        access_resumes = next((p.start for p in periods if p.start > (access_until or day)), None)
        return Explanation(
            user=wp_user,
            term_id=term_id,
            level_name=level_names.get(term_id, f"#{term_id}"),
            day=day,
            verdict=verdict,
            keys=tuple(_key_facts(rows, day, policy)),
            ancestors=tuple((a, level_names.get(a, f"#{a}")) for a in ancestors),
            ancestor_keys=tuple(_key_facts(ancestor_rows, day, policy)),
            certificates=certificates,
            certificates_available=classifier.available,
            has_manual_certificate=has_manual,
            read_model=ReadModelState(
                listed=entry is not None,
                expired_on=entry.expired_on if entry is not None else None,
                refreshed_at=refresh.refreshed_at if refresh is not None else None,
                evaluated_for=refresh.evaluated_for if refresh is not None else None,
            ),
            include_basket=policy.include_basket,
            check_ancestors=self.check_ancestors,
            access_until=access_until,
            access_resumes=access_resumes,
        )


def _last_page_rows(total: int, limit: int) -> int:
    """Rows on the last of the pages of ``limit`` rows that hold ``total`` (> 0) rows."""
    return total - (-(-total // limit) - 1) * limit


# --------------------------------------------------------------------------------------------------
# Explanation helpers


def _key_facts(rows: Sequence[KeyRow], day: date, policy) -> Iterator[KeyFact]:
    counting = {row.key_id for row in qualifying_rows(rows, policy)}
    for row in rows:
        status = effective_status(row)
        counts = row.key_id in counting
        if counts:
            note = ""
        elif status == KEY_STATUS_NEW:
            note = "never activated"
        elif row.is_banned:
            note = "banned (revoked by an administrator)"
        elif is_basket(row) and not policy.include_basket:
            note = "in the basket, which the access policy excludes"
        else:
            note = "start or end date missing (zero date)"
        yield KeyFact(
            key_id=row.key_id, term_id=row.term_id, status=status, key_type=row.key_type or "",
            basket=is_basket(row), banned=row.is_banned, unlimited=row.is_unlimited, duration=row.duration,
            units=row.units, date_start=row.date_start, date_end=row.date_end,
            date_registered=row.date_registered, activated_on=activation_day(row), counts=counts,
            active_on_day=counts and has_access_on([row], day, policy), note=note,
        )


# {x}: X, the end of the latest key (its first day without access); {until}: the end of the unbroken access
# that holds the day; {resumes}: the first day of access paid ahead after a gap. Every sentence holds for any
# day asked, past, present or future.
_SUMMARIES = {
    Reason.SLEEPER: "Sleeper: access ended on {x} ({days_before}), nothing renews or replaces it.",
    Reason.ACTIVE: "Active: a key opens the level on {day}; access runs until {until}{later}.",
    Reason.RENEWED: "Not a sleeper: no access on {day}, but a key paid ahead opens the level again on {resumes} "
                    "and access runs until {x}.",
    Reason.UNLIMITED: "Not a sleeper: the user holds an unlimited key for this level.",
    Reason.ANCESTOR_ACTIVE: "Not a sleeper: access to this level ended on {x}, but a key of a parent level "
                            "opens it on {day}.",
    Reason.MANUAL_CERTIFICATE: "Not a sleeper: access ended on {x}, but the user holds a manual certificate "
                               "for this level.",
    Reason.OUTSIDE_WINDOW: "Access ended on {x}, outside the chosen window.",
    Reason.NEVER_ACTIVATED: "Not a sleeper: the user never activated a key of this level.",
    Reason.BANNED_ONLY: "Not a sleeper: every key of this level was banned (access revoked, not expired).",
    Reason.NO_USABLE_ROWS: "Not a sleeper: no key of this level counts (zero dates, or basket keys excluded).",
    Reason.USER_DELETED: "The user no longer exists.",
}


def _days_before(days: int | None, day: date) -> str:
    if days is None:
        return "-"
    if days == 0:
        return "the day evaluated"
    return f"{days} day{'s' if days != 1 else ''} before {day.isoformat()}"


def _summary(e: Explanation) -> str:
    v = e.verdict
    x = v.expired_on.isoformat() if v.expired_on else "-"
    later = f"; a key paid ahead opens it again on {e.access_resumes.isoformat()}, until {x}" \
        if e.access_resumes is not None else ""
    text = _SUMMARIES[v.reason].format(
        x=x, day=e.day.isoformat(), days_before=_days_before(v.days_since_expiry(e.day), e.day),
        until=e.access_until.isoformat() if e.access_until else x,
        resumes=e.access_resumes.isoformat() if e.access_resumes else "-", later=later)
    if v.reason is Reason.RENEWED and e.access_resumes is None:
        # Only a zero-length key (start = end) lies ahead: it marks an end but opens nothing.
        text = f"Not a sleeper: no access on {e.day.isoformat()}, but a key of the level ends after it, on {x}."
    if v.blocked:
        text += " The account is blocked in MemberLux: shown flagged, never mailed."
    return text
