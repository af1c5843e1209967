"""MemberLux's own facts as outbound events: ``access.activated`` and ``access.expired``.

``access.activated`` — once per key activation, from any source (WooCommerce checkout, an activation
code, an administrator, the sidecar's own grants), learnt in one of two ways:

* a **confirmed MemberLux hint** (:mod:`sidecar.webhooks.inbound`): right after the worker confirmed it,
  the key it speaks of (:func:`sidecar.domain.announcements.match_hint`) is announced with
  ``source = "memberlux_webhook:<type>"``;
* the **key scan** (:meth:`AccessAnnouncer.scan`, a worker job every ``schedule.access_scan_seconds``),
  read-only and bounded on a site with a million keys: (1) new rows by primary key from a cursor, and
  (2) activated rows whose ``date_start`` lies in a window from the day before the previous scan to about
  three years ahead, through the ``date_start`` index and around the placeholder day of unused codes
  (:func:`sidecar.domain.announcements.scan_ranges`) — this catches codes created in advance and
  activated *in place* later (core.md 3.1, 3.2), and renewals stacked ahead. ``source = "key_scan"``.

Both claim the key in ``mls_access_activations`` (primary key ``key_id``) in the transaction that
records the event, so a hint and the scan, two workers or a restart never announce one activation
twice. The first scan announces nothing: it records what is already there (``baseline``), keeps the
key cursor at the newest row, and from then on only activations on or after that day are news. An
activation still being written (core's ``keys_meta`` row not there yet) waits for the next scan. While
no enabled endpoint wants ``access.activated`` the scan reads nothing and forgets its position, so a
later subscriber starts from that moment, not from history.

``access.expired`` — once per (learner, level, end of access), from the sleepers rebuild
(:mod:`sidecar.monitor.refresh`) of the current UTC day: learners whose access to the level ended with
no renewal, no unlimited key and no parent level giving access — the sleepers, **and** the learners
the sleepers report leaves out because they hold a manual certificate (``certificate_class`` tells
``manual``, ``auto`` or null). Only ends on or after the day after the sidecar started looking are
announced; ``mls_access_expiries`` makes each once-only across rebuilds, restarts and workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from sidecar.bootstrap import Runtime
from sidecar.domain.access import KeyRow, activation_day, utc_day
from sidecar.domain.announcements import (
    best_certificate_class,
    expiry_is_news,
    first_expiry_day,
    is_activation,
    is_news,
    is_settled,
    match_hint,
    payload_date,
    scan_ranges,
)
from sidecar.memberlux.reader import WpUser
from sidecar.store.db import unit_of_work
from sidecar.store.monitor_models import CertificateClassRow, WatchState
from sidecar.store.webhook_models import AccessActivation, AccessExpiry, InboundHint
from sidecar.webhooks.events import emit, listens

__all__ = ["ACTIVATED", "EXPIRED", "AccessAnnouncer", "Ended", "ScanReport", "scan_job"]

log = logging.getLogger(__name__)

ACTIVATED = "access.activated"
EXPIRED = "access.expired"
KEY_CURSOR = "events.access.key_cursor"        # the highest key id the scan has read
SINCE = "events.access.since"                  # day (ordinal) from which activations are news
SCANNED_ON = "events.access.scanned_on"        # day (ordinal) of the last scan
EXPIRY_SINCE = "events.access_expired.since"   # first end of access (ordinal) that is news
NEW_KEYS_BATCH = 5000
_CHUNK = 500


@dataclass(frozen=True)
class Ended:
    """A learner whose access to a level ended on ``expired_on`` (a sleeper or a manual-certificate holder)."""

    user_id: int
    expired_on: date
    last_grant: date | None
    blocked: bool
    email: str


def ends_of(sleepers: Iterable[tuple], certified: Iterable[tuple]) -> Iterator[Ended]:
    """Everyone whose access to a level ended without renewal: the sleeper tuples
    ``(user_id, expired_on, last_grant, blocked, email, ...)`` and the certificate holders
    ``(user_id, expired_on, last_grant, blocked, email)`` the report leaves out. Made as they are read: a
    whole-site rebuild has hundreds of thousands, wanted only when someone listens."""
    for user_id, expired_on, last_grant, blocked, email, *_ in sleepers:
        yield Ended(user_id, expired_on, last_grant, blocked, email)
    for entry in certified:
        yield Ended(*entry)


@dataclass(frozen=True)
class ScanReport:
    listening: bool = True
    started: bool = False        # the first scan: what is there is recorded, nothing announced
    read: int = 0
    announced: int = 0
    waiting: int = 0             # activations still being written; looked at again next time

    def summary(self) -> str:
        if not self.listening:
            return "no endpoint wants access.activated: keys not scanned"
        if self.started:
            return f"started looking for activations: {self.read} key rows read, none announced"
        return f"{self.read} key rows read, {self.announced} activation(s) announced, {self.waiting} still being written"


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _state(session: Any, name: str) -> int | None:
    row = session.get(WatchState, name)
    return None if row is None else int(row.value)


def _set_state(session: Any, name: str, value: int, now: datetime) -> None:
    row = session.get(WatchState, name)
    if row is None:
        session.add(WatchState(name=name, value=value, updated_at=now))
    elif row.value != value:
        row.value, row.updated_at = value, now


def _forget(session: Any, *names: str) -> None:
    """Drop these positions (only a read when there is nothing to drop, as on most runs)."""
    if session.scalar(sa.select(sa.func.count()).select_from(WatchState).where(WatchState.name.in_(names))):
        session.execute(sa.delete(WatchState).where(WatchState.name.in_(names)))


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class AccessAnnouncer:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.reader = runtime.reader
        self.policy = runtime.access_policy

    # --- access.activated: the key scan ---------------------------------------------------------------

    def scan(self) -> ScanReport:
        now, today = self.runtime.clock.now(), self.runtime.clock.today_utc()
        with unit_of_work(self.runtime.sessions) as session:
            if not listens(session, ACTIVATED):
                _forget(session, KEY_CURSOR, SINCE, SCANNED_ON)
                return ScanReport(listening=False)
            cursor, since, scanned = (_state(session, n) for n in (KEY_CURSOR, SINCE, SCANNED_ON))
        top = self.reader.max_key_id()
        ranges = scan_ranges(today, date.fromordinal(scanned) if scanned else None)
        window_rows = self.reader.activated_keys_starting_in(ranges)
        if cursor is None or since is None:
            self._record([r for r in window_rows if is_activation(r, self.policy)], "baseline", now, announce=False)
            self._save_position(top, today, now, since=today)
            log.info("access events: started looking for key activations at key id %s", top)
            return ScanReport(started=True, read=len(window_rows))
        new_rows = self.reader.owned_keys_between(cursor, top, NEW_KEYS_BATCH)
        rows = {r.key_id: r for r in [*new_rows, *window_rows]}
        since_day = date.fromordinal(since)
        candidates = [r for r in rows.values() if is_activation(r, self.policy) and is_news(r, since_day)]
        known = self._known([r.key_id for r in candidates])
        candidates = [r for r in candidates if r.key_id not in known]
        sources = self.reader.activation_sources([r.key_id for r in candidates]) if candidates else {}
        settled = [r for r in candidates if is_settled(r, sources.get(r.key_id), today)]
        waiting = {r.key_id for r in candidates} - {r.key_id for r in settled}
        announced = self._record(sorted(settled, key=lambda r: r.key_id), "key_scan", now, sources=sources)
        next_cursor = new_rows[-1].key_id if len(new_rows) == NEW_KEYS_BATCH else top
        held = [r.key_id for r in new_rows if r.key_id in waiting]
        if held:  # read again next time, when core has finished writing it
            next_cursor = min(next_cursor, min(held) - 1)
        self._save_position(next_cursor, today, now)
        return ScanReport(read=len(rows), announced=announced, waiting=len(waiting))

    def _known(self, key_ids: Sequence[int]) -> set[int]:
        """The keys among these that were claimed already (announced, or there when the scan started)."""
        found: set[int] = set()
        with self.runtime.sessions() as session:
            for chunk in _chunks(key_ids):
                found.update(session.scalars(sa.select(AccessActivation.key_id).where(AccessActivation.key_id.in_(chunk))))
        return found

    def _save_position(self, cursor: int, today: date, now: datetime, since: date | None = None) -> None:
        with unit_of_work(self.runtime.sessions) as session:
            _set_state(session, KEY_CURSOR, cursor, now)
            _set_state(session, SCANNED_ON, today.toordinal(), now)
            if since is not None:
                _set_state(session, SINCE, since.toordinal(), now)

    # --- access.activated: a confirmed MemberLux hint ----------------------------------------------------

    def announce_hint(self, hint: InboundHint, user: WpUser, rows: Sequence[KeyRow]) -> int | None:
        """Announce the activation a confirmed hint speaks of; its key id, or None (nothing new, or
        nobody listens). The hint's ``type`` is MemberLux's activation source (core.md 6.2)."""
        ids = [r.key_id for r in rows]
        with self.runtime.sessions() as session:
            if not listens(session, ACTIVATED) or not ids:
                return None
        known = self._known(ids)
        key = hint.payload.get("key") if isinstance(hint.payload, dict) else None
        key = key if isinstance(key, dict) else {}
        row = match_hint(rows, received_on=utc_day(hint.received_at), date_start=payload_date(key.get("date_start")),
                         date_end=payload_date(key.get("date_end")), known=known, policy=self.policy)
        if row is None:
            return None
        source = self.reader.activation_sources([row.key_id]).get(row.key_id)
        announced = self._record([row], f"memberlux_webhook:{hint.type}"[:80], self.runtime.clock.now(),
                                 sources={row.key_id: hint.type if source is None else source}, users={user.id: user})
        return row.key_id if announced else None

    # --- recording ------------------------------------------------------------------------------------------

    def _record(self, rows: Sequence[KeyRow], found_by: str, now: datetime, *, announce: bool = True,
                sources: dict[int, str | None] | None = None, users: dict[int, WpUser] | None = None) -> int:
        """Claim each key once and announce it in the same transaction; returns how many were announced.

        A key another worker (or the hint, or the scan) claimed first is left alone: the batch is tried
        again once, and then sees that claim.
        """
        if not rows:
            return 0
        users = dict(users or {})
        names: dict[int, str] = {}
        if announce:
            missing = [r.user_id for r in rows if r.user_id is not None and r.user_id not in users]
            users.update(self.reader.users(missing) if missing else {})
            names = {level.term_id: level.name for level in self.reader.levels()}
        announced = 0
        for chunk in _chunks(rows):
            for attempt in (1, 2):
                try:
                    with unit_of_work(self.runtime.sessions) as session:
                        made = self._claim(session, chunk, found_by, now, announce, sources or {}, users, names)
                    announced += made
                    break
                except IntegrityError:
                    if attempt == 2:
                        raise
                    log.info("access events: another worker claimed some of these keys; trying the batch again")
        return announced

    @staticmethod
    def _claim(session: Any, rows: Sequence[KeyRow], found_by: str, now: datetime, announce: bool,
               sources: dict[int, str | None], users: dict[int, WpUser], names: dict[int, str]) -> int:
        known = set(session.scalars(sa.select(AccessActivation.key_id)
                                    .where(AccessActivation.key_id.in_([r.key_id for r in rows]))))
        made = 0
        for row in rows:
            if row.key_id in known:
                continue
            assert row.user_id is not None and row.term_id is not None
            user = users.get(row.user_id)
            event_id = None
            if announce and user is not None:  # a key of a deleted user opens nothing: recorded, not announced
                event_id = emit(session, ACTIVATED, {
                    "user_id": row.user_id, "email": user.email, "term_id": row.term_id,
                    "level_name": names.get(row.term_id, ""), "key_id": row.key_id, "date_start": _iso(row.date_start),
                    "date_end": None if row.is_unlimited else _iso(row.date_end), "is_unlimited": row.is_unlimited,
                    "activated_on": _iso(activation_day(row)), "memberlux_source": sources.get(row.key_id),
                    "source": found_by}, now)
                made += 1 if event_id else 0
            session.add(AccessActivation(key_id=row.key_id, user_id=row.user_id, term_id=row.term_id,
                                         found_by=found_by, event_id=event_id, seen_at=now))
        return made

    # --- access.expired ---------------------------------------------------------------------------------------

    def announce_expiries(self, term_id: int, day: date, ended: Iterable[Ended]) -> int:
        """Announce the ends of access a rebuild of ``term_id`` for UTC day ``day`` found, each once.

        Only a rebuild for today announces (``sleepers refresh --date`` looks at another day); the
        first rebuild while someone listens only marks where news begins.
        """
        today, now = self.runtime.clock.today_utc(), self.runtime.clock.now()
        if day != today:
            return 0
        with unit_of_work(self.runtime.sessions) as session:
            if not listens(session, EXPIRED):
                _forget(session, EXPIRY_SINCE)
                return 0
            since = _state(session, EXPIRY_SINCE)
            if since is None:
                _set_state(session, EXPIRY_SINCE, first_expiry_day(today).toordinal(), now)
                return 0
        news = [e for e in ended if expiry_is_news(e.expired_on, date.fromordinal(since))]
        if not news:
            return 0
        level = self.reader.level(term_id)
        announced = 0
        for chunk in _chunks(news):
            for attempt in (1, 2):
                try:
                    with unit_of_work(self.runtime.sessions) as session:
                        made = self._expire(session, term_id, level.name if level else "", chunk, now)
                    announced += made
                    break
                except IntegrityError:
                    if attempt == 2:
                        raise
        return announced

    @staticmethod
    def _expire(session: Any, term_id: int, level_name: str, ended: Sequence[Ended], now: datetime) -> int:
        user_ids = sorted({e.user_id for e in ended})
        known = set(session.execute(sa.select(AccessExpiry.user_id, AccessExpiry.expired_on).where(
            AccessExpiry.term_id == term_id, AccessExpiry.user_id.in_(user_ids))).tuples())
        classes: dict[int, list[str]] = {}
        for user_id, cls in session.execute(sa.select(CertificateClassRow.user_id, CertificateClassRow.cls).where(
                CertificateClassRow.level_id == term_id, CertificateClassRow.user_id.in_(user_ids),
                CertificateClassRow.deleted_at.is_(None))):
            classes.setdefault(int(user_id), []).append(str(cls))
        made = 0
        for entry in ended:
            if (entry.user_id, entry.expired_on) in known:
                continue
            event_id = emit(session, EXPIRED, {
                "user_id": entry.user_id, "email": entry.email, "term_id": term_id, "level_name": level_name,
                "expired_on": entry.expired_on.isoformat(), "last_grant": _iso(entry.last_grant),
                "blocked": entry.blocked, "certificate_class": best_certificate_class(classes.get(entry.user_id, ()))},
                now)
            made += 1 if event_id else 0
            session.add(AccessExpiry(term_id=term_id, user_id=entry.user_id, expired_on=entry.expired_on,
                                     event_id=event_id, recorded_at=now))
            known.add((entry.user_id, entry.expired_on))
        return made


def scan_job(runtime: Runtime) -> str:
    return AccessAnnouncer(runtime).scan().summary()
