"""Read side of the grant bridge for the admin UI and the CLI: lists, counts, one grant in full.

Lists paginate by keyset on ``(created_at, id)``, newest first: unlike OFFSET, a page does not shift
when new grants arrive while an administrator reads older ones, and grants created in the same
instant (a burst of webhooks) are neither repeated nor skipped, because ``id`` breaks the tie.

Nothing here writes; changes go through ``BridgeService``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sidecar.bridge.attention import Unsettled
from sidecar.store import audit
from sidecar.store.grant_models import ALL_STATES, Grant, GrantAttempt
from sidecar.store.models import AuditEvent

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Cursor:
    """Position after the last row shown: that row's ``created_at`` and ``id``."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        # Integer microseconds rather than an ISO string: URL-safe as is, and no float rounding.
        micros = (self.created_at.astimezone(timezone.utc) - _EPOCH) // _MICROSECOND
        return f"{micros}.{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor in ``text``; ``ValueError`` when it is not one this module produced."""
        micros, dot, grant_id = (text or "").strip().partition(".")
        if not dot or not grant_id or len(grant_id) > 32 or not grant_id.isalnum() or not micros.isdecimal():
            raise ValueError(f"not a page cursor: {text!r}")
        try:
            created_at = _EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            raise ValueError(f"not a page cursor: {text!r}") from None
        return cls(created_at, grant_id)

    @classmethod
    def after(cls, grant: Grant) -> Cursor:
        return cls(grant.created_at, grant.id)


@dataclass(frozen=True)
class Page:
    rows: list[Grant]
    next_cursor: Cursor | None  # None on the last page


class GrantDetail(NamedTuple):
    grant: Grant
    attempts: list[GrantAttempt]
    events: list[AuditEvent]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _search_clause(search: str) -> sa.ColumnElement[bool]:
    needle = search.strip()
    clauses: list[sa.ColumnElement[bool]] = [
        sa.func.lower(Grant.email).like(f"%{_escape_like(needle.lower())}%", escape="\\"),
        Grant.external_id == needle,
        Grant.id == needle,
    ]
    if needle.isdecimal() and len(needle) <= 18:  # fits a BIGINT
        clauses.append(Grant.amo_lead_id == int(needle))
    return sa.or_(*clauses)


def list_grants(session: Session, *, status: str | None = None, channel: str | None = None,
                source: str | None = None, created_from: datetime | None = None,
                created_to: datetime | None = None, search: str | None = None, before: Cursor | None = None,
                limit: int = DEFAULT_LIMIT, unsettled: Unsettled | None = None) -> Page:
    """One page of grants, newest first.

    ``created_from`` is inclusive and ``created_to`` exclusive (aware datetimes; see :func:`day_range`).
    ``search`` matches part of the e-mail (case-insensitive), or exactly the external id, the grant id
    or the amoCRM lead id. ``before`` is the ``next_cursor`` of the previous page. ``unsettled`` keeps
    only grants whose outcome is still unknown past their settle time (:mod:`sidecar.bridge.attention`).
    """
    limit = max(1, min(int(limit), MAX_LIMIT))
    stmt = sa.select(Grant)
    if status:
        stmt = stmt.where(Grant.status == status)
    if channel:
        stmt = stmt.where(Grant.channel == channel)
    if source:
        stmt = stmt.where(Grant.source_label == source)
    if created_from is not None:
        stmt = stmt.where(Grant.created_at >= created_from)
    if created_to is not None:
        stmt = stmt.where(Grant.created_at < created_to)
    if search and search.strip():
        stmt = stmt.where(_search_clause(search))
    if unsettled is not None:
        stmt = stmt.where(unsettled.clause())
    if before is not None:
        stmt = stmt.where(sa.or_(Grant.created_at < before.created_at,
                                 sa.and_(Grant.created_at == before.created_at, Grant.id < before.id)))
    # One row more than asked tells whether a next page exists without a COUNT.
    rows = list(session.scalars(stmt.order_by(Grant.created_at.desc(), Grant.id.desc()).limit(limit + 1)))
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, Cursor.after(rows[-1]))
    return Page(rows, None)


def counts_by_status(session: Session, unsettled: Unsettled | None = None) -> dict[str, int]:
    """Grants per status, every known status present (zero included), in lifecycle order; with
    ``unsettled``, only the grants that filter keeps (the counts then match the filtered list)."""
    stmt = sa.select(Grant.status, sa.func.count()).group_by(Grant.status)
    if unsettled is not None:
        stmt = stmt.where(unsettled.clause())
    found = dict(session.execute(stmt).tuples().all())
    counts = {state: int(found.pop(state, 0)) for state in ALL_STATES}
    counts.update({state: int(n) for state, n in sorted(found.items())})  # a state this code does not know yet
    return counts


def channels(session: Session) -> list[str]:
    """The channels grants actually came through, for the filter's choices."""
    return sorted(c for c in session.scalars(sa.select(Grant.channel).distinct()) if c)


def grant_detail(session: Session, grant_id: str) -> GrantDetail | None:
    """The grant, its delivery attempts in order, and its audit trail; ``None`` for an unknown id."""
    grant = session.get(Grant, grant_id)
    if grant is None:
        return None
    attempts = list(session.scalars(sa.select(GrantAttempt).where(GrantAttempt.grant_id == grant.id)
                                    .order_by(GrantAttempt.number, GrantAttempt.id)))
    return GrantDetail(grant, attempts, audit.trail(session, "grant", grant.id))


def day_range(first: date | None, last: date | None, zone: tzinfo) -> tuple[datetime | None, datetime | None]:
    """Calendar days as the administrator means them (in ``zone``) -> ``[from, to)`` in UTC."""
    start = datetime.combine(first, time.min, zone).astimezone(timezone.utc) if first else None
    end = datetime.combine(last + timedelta(days=1), time.min, zone).astimezone(timezone.utc) if last else None
    return start, end


# --- plain representations (CLI JSON) ------------------------------------------------------------

def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def grant_record(grant: Grant) -> dict[str, Any]:
    """Every stored field of the grant, JSON-ready. The store holds no access code, so none can leak."""
    return {column.key: _plain(getattr(grant, column.key)) for column in sa.inspect(Grant).column_attrs}


def attempt_record(attempt: GrantAttempt) -> dict[str, Any]:
    return {column.key: _plain(getattr(attempt, column.key)) for column in sa.inspect(GrantAttempt).column_attrs
            if column.key != "grant_id"}


def event_record(event: AuditEvent) -> dict[str, Any]:
    return {"occurred_at": _plain(event.occurred_at), "action": event.action, "actor": event.actor,
            "source_ip": event.source_ip, "request_id": event.request_id, "details": event.details or {}}


__all__ = ["Cursor", "GrantDetail", "Page", "attempt_record", "channels", "counts_by_status", "day_range",
           "event_record", "grant_detail", "grant_record", "list_grants"]
