"""Delivering grants to MemberLux: claim, look for traces, order, confirm — at most one key per grant.

Every order carries ``utm_source=mlsidecar&utm_id=<grant id>``; MemberLux stores those in
``keys_meta`` for the key it activates (core.md 5.6). On a real site that row is the *last* thing
an order writes, and PHP keeps writing after the caller gave up (core.md 13), so:

* before an order call the grant is marked ``delivering`` (committed); a worker killed during the
  call leaves exactly that, and whoever picks it up treats it as an unknown outcome;
* an unknown outcome (no answer before the deadline, 5xx/504, connection lost after sending) makes
  the grant ``unknown``: it is **never ordered again before ``settle_until``** (the call's end plus
  ``bridge.settle_seconds``), and every ``bridge.unknown_poll_seconds`` the worker looks for every
  trace of the call (``sidecar.memberlux.traces``): a key with our ``utm_id`` settles it; a
  WooCommerce order for the customer or a key of (user, level) since the first call means an order
  exists (``confirming``, never ordered again); only after the settle time with no trace at all is
  it ordered again (``sidecar.domain.outcomes``);
* more than one key with our ``utm_id`` is never a silent success: the grant ends ``duplicated``
  (event, metric, UI), and a grant ordered more than once is re-read for ``settle_seconds`` after
  its success so that a late second key is caught too.

Claims are conditional UPDATEs in our store, so two workers (or a worker and a web request with
``?wait=``) never process the same grant at the same time; every state write is conditioned on the
claim it was made under, so a worker whose claim expired cannot overwrite what another one did.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sidecar.bootstrap import Runtime
from sidecar.domain.access import KeyRow
from sidecar.domain.grants import RawGrant
from sidecar.domain.messages import Message
from sidecar.domain.outcomes import Evidence, Judgement, Verdict, judge
from sidecar.domain.shadow import Expected, SeenKey, in_window, judge_shadow
from sidecar.logs import mask_emails
from sidecar.memberlux.payments import payments_state
from sidecar.memberlux.rest import (
    Customer, MemberLuxRestClient, OrderLabels, PermanentRestError, RestError, UnknownOutcomeError,
)
from sidecar.memberlux.traces import Customer as TraceCustomer
from sidecar.memberlux.traces import TraceReader
from sidecar.store import audit
from sidecar.store.db import run_transaction, unit_of_work
from sidecar.store.grant_models import (
    CONFIRMING, DELIVERING, DUPLICATED, FAILED, FETCHING, QUEUED, SHADOW, SHADOWED, SUCCEEDED, UNKNOWN, Grant, GrantAttempt,
)
from sidecar.store.leases import holder_name
from sidecar.webhooks.events import emit

from .amocrm import AmoApiError, AmoClient, AmoFetcher, AmoFieldNames, AmoPayloadError
from .reasons import error_values
from .service import BridgeService, IntakeRejected, emit_accepted

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_GRANTS = Grant.__table__
_ATTEMPTS = GrantAttempt.__table__
WORKABLE = (QUEUED, FETCHING, DELIVERING, UNKNOWN, CONFIRMING, SHADOW)
#: New orders after orders that exist without a key, never answered as complete, on a site whose
#: payments add-on is active with auto-activation (a bound against a site that breaks every order).
MAX_REORDERS_WITHOUT_KEY = 3


class ClaimLost(Exception):
    """Our claim on a grant expired and someone else may be working on it: stop, write nothing more."""


@dataclass(frozen=True)
class Step:
    """What one processing pass did, for logs and tests."""

    grant_id: str
    outcome: str
    status: str


def amo_field_names(runtime: Runtime) -> AmoFieldNames:
    amo = runtime.settings.bridge.amocrm
    return AmoFieldNames(course=amo.course_field, duration=amo.duration_field, units=amo.units_field,
                         start_date=amo.start_date_field, email_code=amo.email_field_code, phone_code=amo.phone_field_code)


class GrantDeliverer:
    def __init__(self, runtime: Runtime, service: BridgeService | None = None, *,
                 rest_client: MemberLuxRestClient | None = None, amo_fetcher: AmoFetcher | None = None,
                 rng: random.Random | None = None, holder: str | None = None,
                 traces: TraceReader | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.bridge
        self.service = service or BridgeService(runtime)
        self.rest = rest_client or runtime.rest_client()
        self.amo_fetcher = amo_fetcher
        self.rng = rng or random.Random()  # noqa: S311 - jitter of retry delays, not a secret
        self.holder = holder or holder_name()
        self._traces = traces
        # A claim covers one pass: look-ups, one order call (bounded by its total deadline), a read-back.
        self.lease = timedelta(seconds=runtime.settings.memberlux.timeout_seconds + 60)

    @property
    def traces(self) -> TraceReader:
        if self._traces is None:
            self._traces = self.runtime.trace_reader()
        return self._traces

    @property
    def settle(self) -> timedelta:
        return timedelta(seconds=self.settings.settle_seconds)

    @property
    def poll(self) -> timedelta:
        return timedelta(seconds=self.settings.unknown_poll_seconds)

    # --- claiming ------------------------------------------------------------------------------
    def _claimable(self, now: datetime) -> sa.ColumnElement[bool]:
        return sa.and_(Grant.status.in_(WORKABLE), Grant.next_attempt_at <= now,
                       sa.or_(Grant.claim_expires_at.is_(None), Grant.claim_expires_at < now))

    def due(self, limit: int) -> list[str]:
        """Grants to work on now: look-ups and read-backs (cheap database reads that settle earlier calls)
        before new orders (slow calls to the site), each kind oldest first."""
        now = self.runtime.clock.now()
        new_order_last = sa.case((Grant.status == QUEUED, 1), else_=0)
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(Grant.id).where(self._claimable(now))
                                        .order_by(new_order_last, Grant.next_attempt_at, Grant.id).limit(limit)))

    def _claim_name(self) -> str:
        # One name per claim, so that a later claim of the same grant by another thread of this process
        # never passes for this one when a write checks who holds the grant.
        return f"{self.holder[:100]}:{secrets.token_hex(4)}"

    def _transaction(self, work: Callable[[Session], _T], grant_id: str, what: str) -> _T:
        """``work(session)`` in one committed transaction, run again when MariaDB rolled it back for
        contention: a grant must not wait for its claim to expire because a bookkeeping write lost a race
        (what it records is often the site's answer to an order)."""
        return run_transaction(self.runtime.sessions, work, f"{what} of grant {grant_id}")

    def claim(self, grant_id: str) -> Grant | None:
        now = self.runtime.clock.now()

        def claimed(session: Session) -> Grant | None:
            won = session.connection().execute(
                sa.update(_GRANTS).where(_GRANTS.c.id == grant_id, self._claimable(now))
                .values(claimed_by=self._claim_name(), claim_expires_at=now + self.lease)
            ).rowcount
            return session.get(Grant, grant_id) if won else None

        return self._transaction(claimed, grant_id, "the claim")

    @staticmethod
    def _ours(grant: Grant) -> sa.ColumnElement[bool]:
        """The grant is still under the claim this copy was read with: the condition of every state write."""
        return sa.and_(Grant.id == grant.id, Grant.claimed_by == grant.claimed_by, Grant.claimed_by.is_not(None))

    def _set(self, session, grant: Grant, changes: dict) -> bool:
        """Apply ``changes`` to the grant row under our claim; whether we still held it. A plain UPDATE of the
        table: the ORM's bulk update would look for loaded copies to synchronise, and there are none."""
        return bool(session.connection().execute(sa.update(_GRANTS).where(self._ours(grant))
                                                 .values(**{"updated_at": self.runtime.clock.now(), **changes})).rowcount)

    def _write(self, session, grant: Grant, **changes) -> None:
        if not self._set(session, grant, changes):
            raise ClaimLost(grant.id)

    def _as_written(self, grant: Grant, changes: dict) -> Grant:
        """The grant as its row now is, without reading it again: the copy read under our claim with the
        changes just written under that same claim (nobody else writes a grant we hold)."""
        for name, value in changes.items():
            setattr(grant, name, value)
        return grant

    def _release(self, grant: Grant, **changes) -> Grant:
        changes = {"updated_at": self.runtime.clock.now(), "claimed_by": None, "claim_expires_at": None, **changes}
        self._update(grant, **changes)
        return self._as_written(grant, changes)

    def release(self, grant: Grant) -> Grant | None:
        """Give a grant back untouched if we still hold it (a pass may have released it already)."""

        def released(session: Session) -> Grant | None:
            self._set(session, grant, {"claimed_by": None, "claim_expires_at": None})
            return session.get(Grant, grant.id)

        return self._transaction(released, grant.id, "a release")

    def _update(self, grant: Grant, **changes) -> None:
        self._transaction(lambda session: self._write(session, grant, **changes), grant.id, "a state change")

    # --- bookkeeping -------------------------------------------------------------------------------
    def _attempt(self, grant: Grant, kind: str, outcome: str, started: datetime, *, status: int | None = None,
                 detail: str | None = None, action: str | None = None, grant_changes: dict | None = None,
                 events: list[tuple[str, dict]] | None = None, finished: datetime | None = None,
                 then: dict | None = None, reread: bool = False, **audit_details) -> Grant | None:
        """Record one attempt (and its audit event), applying ``grant_changes`` in the same transaction.

        The attempt is recorded even when our claim was lost meanwhile (what the site answered is a
        fact worth keeping); the grant's state and the events are written only under our claim.

        ``then`` is a second attempt of the same pass (the same arguments as a dict), recorded after this
        one in the same transaction, its ``grant_changes`` applied over this one's: an order's answer and
        the read-back that found its key are one commit. It is recorded only under our claim: a read-back
        is no fact about the site worth keeping once another worker holds the grant. ``finished`` is when
        the attempt ended (default: now). With ``reread`` the grant as written is returned (built from what
        was written under our claim, not read again).
        """
        now = self.runtime.clock.now()
        attempts = [(kind, outcome, started, finished or now, status, detail, action, audit_details)]
        changes = dict(grant_changes or {})
        emitted = list(events or ())
        if then is not None:
            then = dict(then)
            changes.update(then.pop("grant_changes", None) or {})
            emitted.extend(then.pop("events", None) or ())
            attempts.append((then.pop("kind"), then.pop("outcome"), then.pop("started"), then.pop("finished", None) or now,
                             then.pop("status", None), then.pop("detail", None), then.pop("action", None), then))
        if changes:
            changes = {"updated_at": now, **changes}
        released = None
        lost = self._record(grant, attempts, changes, emitted, now, f"{kind} {outcome}")
        if not lost:
            # Our copy follows the row, so that what a pass returns is the grant as stored.
            self._as_written(grant, changes)
            if reread:
                released = grant
        if lost:
            log.warning("grant %s: claim lost before %s %s was applied; left to its new holder", grant.id, kind, outcome)
            raise ClaimLost(grant.id)
        return released

    def _record(self, grant: Grant, attempts: list[tuple], changes: dict, emitted: list[tuple[str, dict]],
                now: datetime, what: str) -> bool:
        """One transaction: ``changes`` under our claim, the attempt rows, their audit trail and ``emitted``;
        True when the claim was lost (then only the first attempt is recorded)."""

        def recorded_in(session: Session) -> bool:
            # The grant row first: inserting the attempt takes a shared lock on it (foreign key), and a
            # shared lock upgraded to an exclusive one deadlocks against a rival's claim on MariaDB.
            lost = bool(changes) and not self._set(session, grant, changes)
            recorded = attempts[:1] if lost else attempts
            connection = session.connection()
            # Numbered after the stored ones, counted by a plain read: an INSERT ... SELECT counting
            # them would lock what it reads and hold the table's AUTO-INC lock for the statement,
            # and two such inserts deadlock on MariaDB.
            stored = connection.execute(sa.select(sa.func.count()).select_from(_ATTEMPTS)
                                        .where(_ATTEMPTS.c.grant_id == grant.id)).scalar_one()
            # Plain INSERTs: building and flushing ORM objects costs more than these writes themselves.
            connection.execute(_ATTEMPTS.insert(), [
                {"grant_id": grant.id, "number": stored + n, "kind": a_kind, "started_at": a_started,
                 "finished_at": a_finished, "outcome": a_outcome, "http_status": a_status,
                 "detail": (a_detail or "")[:1000] or None,
                 "elapsed_ms": int((a_finished - a_started).total_seconds() * 1000), "worker": self.holder}
                for n, (a_kind, a_outcome, a_started, a_finished, a_status, a_detail, _a, _d)
                in enumerate(recorded, 1)])
            trail = [audit.row(subject_type="grant", subject_id=grant.id,
                               action=a_action or f"{a_kind}.{a_outcome}", at=a_finished, actor=self.holder,
                               http_status=a_status, detail=(a_detail or None), **a_details)
                     for a_kind, a_outcome, _s, a_finished, a_status, a_detail, a_action, a_details in recorded]
            if lost:
                trail.append(audit.row(subject_type="grant", subject_id=grant.id, action="grant.claim_lost",
                                       at=now, actor=self.holder,
                                       detail=f"claim expired before {what} could be applied"))
            audit.insert_rows(session, trail)
            if not lost:
                for name, payload in emitted:
                    emit(session, name, payload, now)
            return lost

        return self._transaction(recorded_in, grant.id, f"the record of {what}")

    def _after(self, grant: Grant, first: dict | None, kind: str, outcome: str, started: datetime,
               **record) -> Grant | None:
        """Record an attempt, after ``first`` (an attempt not yet recorded) in the same transaction if given."""
        if first is None:
            return self._attempt(grant, kind, outcome, started, **record)
        reread = record.pop("reread", False)
        return self._attempt(grant, **first, then={"kind": kind, "outcome": outcome, "started": started, **record},
                             reread=reread)

    def _backoff(self, attempts: int) -> timedelta:
        base, cap = self.settings.retry_base_seconds, self.settings.retry_max_seconds
        delay = min(cap, base * 2 ** max(0, attempts - 1))
        return timedelta(seconds=delay * self.rng.uniform(0.5, 1.5))

    def _age_clock_start(self, grant: Grant) -> datetime:
        retried = (grant.meta or {}).get("retried_at")
        return max(grant.created_at, datetime.fromisoformat(retried)) if retried else grant.created_at

    def _transient(self, grant: Grant, said: Message, **changes) -> Grant:
        now = self.runtime.clock.now()
        attempts = grant.attempts
        if now - self._age_clock_start(grant) > timedelta(hours=self.settings.give_up_after_hours):
            return self._fail(grant, Message("grants.gave_up", {"attempts": attempts, "reason": said,
                                                                "hours": self.settings.give_up_after_hours}), **changes)
        meta = changes.pop("meta", grant.meta)
        return self._release(grant, next_attempt_at=now + self._backoff(attempts), **error_values(meta, said), **changes)

    def _fail(self, grant: Grant, said: Message, **changes) -> Grant:
        now = self.runtime.clock.now()
        reason = said.english()
        # Always final: giving up from ``_transient`` passes the caller's retry changes (status=queued).
        changes["status"] = FAILED
        meta = changes.pop("meta", grant.meta)
        with unit_of_work(self.runtime.sessions) as session:
            self._write(session, grant, claimed_by=None, claim_expires_at=None, completed_at=now,
                        **error_values(meta, said), **changes)
            audit.record(session, subject_type="grant", subject_id=grant.id, action="grant.failed", at=now,
                         actor=self.holder, reason=reason)
            emit(session, "grant.failed", {"grant_id": grant.id, "channel": grant.channel, "external_id": grant.external_id,
                                           "email": grant.email or "", "term_id": grant.term_id,
                                           "error": reason[:500]}, now)
            released = session.get(Grant, grant.id)
        log.warning("grant %s failed: %s", grant.id, mask_emails(reason))
        return released

    # --- processing ---------------------------------------------------------------------------------
    def process(self, grant: Grant) -> Step:
        try:
            return self._process(grant)
        except ClaimLost:
            return Step(grant.id, "claim_lost", grant.status)

    def _process(self, grant: Grant) -> Step:
        if grant.status == FETCHING:
            grant = self.fetch_crm_data(grant)
            if grant.status != QUEUED:
                return Step(grant.id, "fetch", grant.status)
        if grant.status == SHADOW:
            grant = self.watch_shadow(grant)
            return Step(grant.id, "shadow", grant.status)
        if grant.status == DELIVERING:
            # A worker died (or lost its claim) during an order call: that call may still be running.
            grant = self._interrupted(grant)
        if grant.status == UNKNOWN:
            grant = self.resolve_unknown(grant)
            return Step(grant.id, "resolve", grant.status)
        if grant.status == CONFIRMING:
            grant = self.confirm(grant)
            return Step(grant.id, "confirm", grant.status)
        if grant.status == QUEUED:
            grant = self.deliver(grant)
            return Step(grant.id, "deliver", grant.status)
        return Step(grant.id, "noop", grant.status)

    def process_by_id(self, grant_id: str) -> Step | None:
        grant = self.claim(grant_id)
        return self.process(grant) if grant else None

    def run_once(self, limit: int = 20) -> list[Step]:
        steps = []
        for grant_id in self.due(limit):
            step = self.process_by_id(grant_id)
            if step:
                steps.append(step)
        return steps

    # --- amoCRM leads ----------------------------------------------------------------------------------
    def _fetcher(self) -> AmoFetcher:
        if self.amo_fetcher is None:
            amo = self.settings.amocrm
            if not amo.enabled or amo.token is None:
                raise AmoApiError(None, "amoCRM intake is not configured (bridge.amocrm)", transient=False)
            zone = ZoneInfo(amo.timezone) if amo.timezone else None
            self.amo_fetcher = AmoFetcher(AmoClient(amo.base_url, amo.token.reveal(), timeout=amo.timeout_seconds),
                                          **({"tz": zone} if zone else {}))
        return self.amo_fetcher

    def fetch_crm_data(self, grant: Grant) -> Grant:
        started = self.runtime.clock.now()
        self._update(grant, attempts=grant.attempts + 1)
        grant.attempts += 1
        try:
            fields = self._fetcher().fetch_grant_fields(int(grant.amo_lead_id or 0), amo_field_names(self.runtime))
        except AmoApiError as exc:
            self._attempt(grant, "crm_fetch", "unknown" if exc.transient else "permanent", started,
                          status=exc.status, detail=str(exc))
            if exc.transient:
                return self._transient(grant, Message("grants.crm_error", {"detail": str(exc)}))
            return self._fail(grant, Message("grants.crm_error", {"detail": str(exc)}))
        except AmoPayloadError as exc:
            self._attempt(grant, "crm_fetch", "permanent", started, detail=str(exc))
            return self._fail(grant, Message("grants.lead_unreadable", {"lead": grant.amo_lead_id, "detail": str(exc)}))
        raw = RawGrant(email=fields.email, term_id=fields.term_id, duration=fields.duration, units=fields.units_raw,
                       first_name=fields.first_name, last_name=fields.last_name, phone=fields.phone,
                       field_names={"email": "contact.EMAIL", "term_id": "lead.course", "duration": "lead.duration",
                                    "units": "lead.units"})
        from .parsers import ParsedRequest

        try:
            spec = self.service.validate(ParsedRequest(format="amocrm", raw=raw))
            level_name, product_id, product_text = self.service.check_spec(spec)
        except IntakeRejected as exc:
            detail = exc.message + "".join(f"; {e.field}: {e.message}" for e in exc.errors)
            self._attempt(grant, "crm_fetch", "permanent", started, detail=detail)
            return self._fail(grant, _lead_rejected(grant, exc), meta={**(grant.meta or {}), "rejection": exc.code})
        self._attempt(grant, "crm_fetch", "ok", started, action="crm.fetched", contact_id=fields.contact_id,
                      email=spec.email, term_id=spec.term_id, level=level_name, duration=spec.duration, units=spec.units,
                      start_date_raw=fields.start_date_raw, product_id=product_id, product=product_text)
        meta = {**(grant.meta or {}), **fields.legacy_meta(),
                "start_date": fields.start_date.isoformat() if fields.start_date else None}
        shadow = bool((grant.meta or {}).get("shadow"))
        with unit_of_work(self.runtime.sessions) as session:
            self._write(session, grant,
                        status=SHADOW if shadow else QUEUED, email=spec.email, first_name=spec.first_name or None,
                        last_name=spec.last_name or None,
                        phone=spec.phone or None, term_id=spec.term_id, duration=spec.duration, units=spec.units,
                        product_id=product_id, meta=meta, last_error=None)
            fetched = session.get(Grant, grant.id)
            emit_accepted(session, fetched)   # now it says what it grants
            if shadow:
                audit.record(session, subject_type="grant", subject_id=grant.id, action="shadow.watching",
                             at=self.runtime.clock.now(), actor=self.holder,
                             window_minutes=self.settings.shadow_window_minutes)
            return fetched

    # --- shadow mode ------------------------------------------------------------------------------------
    def watch_shadow(self, grant: Grant) -> Grant:
        """Look (read-only) for the keys the legacy plugin wrote for this request; never order anything.

        Every look remembers the keys it saw in the grant's ``meta["shadow_watch"]``, so that a key the old
        plugin deleted again (its same-day delete and insert) still counts. Once the window has passed the
        outcome is final (``sidecar.domain.shadow``), with its evidence in ``meta`` and the audit trail.
        """
        now = self.runtime.clock.now()
        received = _utc(grant.created_at)
        until = received + timedelta(minutes=self.settings.shadow_window_minutes)
        expected = Expected(term_id=int(grant.term_id or 0), duration=int(grant.duration or 0),
                            units=grant.units or "", received_at=received)
        watch = dict((grant.meta or {}).get("shadow_watch") or {})
        seen: dict[int, dict] = {int(k["key_id"]): dict(k) for k in watch.get("keys", [])}
        user = self.runtime.reader.user_by_email(grant.email) if grant.email else None
        appeared, vanished = [], []
        current: set[int] = set()
        if user is not None:
            for row in self.runtime.reader.key_rows(user.id):
                if row.activated_at is None or row.term_id is None:
                    continue
                key = SeenKey(row.key_id, row.term_id, row.duration, row.units, row.is_unlimited, _utc(row.activated_at))
                if not in_window(key, expected, until):
                    continue
                current.add(row.key_id)
                if row.key_id not in seen:
                    appeared.append(row.key_id)
                seen[row.key_id] = {
                    "key_id": row.key_id, "term_id": row.term_id, "duration": row.duration, "units": row.units,
                    "is_unlimited": row.is_unlimited, "activated_at": key.activated_at.isoformat(),
                    "date_start": row.date_start.isoformat() if row.date_start else None,
                    "date_end": row.date_end.isoformat() if row.date_end else None,
                    "date_registered": row.date_registered.isoformat() if row.date_registered else None,
                    "vanished": False}
        for key_id, record in seen.items():
            if key_id not in current and not record.get("vanished"):
                record["vanished"] = True
                vanished.append(key_id)
        watch = {"keys": [seen[k] for k in sorted(seen)], "user_id": user.id if user else None,
                 "looked_at": now.isoformat()}
        meta = {**(grant.meta or {}), "shadow_watch": watch}
        with unit_of_work(self.runtime.sessions) as session:
            if now < until:
                self._write(session, grant, claimed_by=None, claim_expires_at=None, meta=meta,
                            user_id=user.id if user else None, next_attempt_at=min(now + self.poll, until))
            else:
                keys = [SeenKey(r["key_id"], r["term_id"], r["duration"], r["units"], r["is_unlimited"],
                                datetime.fromisoformat(r["activated_at"])) for r in seen.values()]
                judgement = judge_shadow(expected, user is not None, keys, until)
                single = seen[judgement.key_ids[0]] if len(judgement.key_ids) == 1 else None
                meta["shadow_result"] = {"outcome": judgement.outcome.value, "reason": judgement.reason,
                                         "key_ids": list(judgement.key_ids)}
                self._write(session, grant, claimed_by=None, claim_expires_at=None, meta=meta,
                            status=SHADOWED, shadow_outcome=judgement.outcome.value, completed_at=now, last_error=None,
                            user_id=user.id if user else None, key_id=single["key_id"] if single else None,
                            date_start=_day(single, "date_start"), date_end=_day(single, "date_end"),
                            is_unlimited=bool(single and single["is_unlimited"]))
                audit.record(session, subject_type="grant", subject_id=grant.id,
                             action=f"shadow.{judgement.outcome.value}", at=now, actor=self.holder,
                             reason=judgement.reason, user_id=user.id if user else None,
                             keys=[seen[k] for k in judgement.key_ids])
            for key_id in appeared:
                audit.record(session, subject_type="grant", subject_id=grant.id, action="shadow.key_seen", at=now,
                             actor=self.holder, **seen[key_id])
            for key_id in vanished:
                audit.record(session, subject_type="grant", subject_id=grant.id, action="shadow.key_vanished",
                             at=now, actor=self.holder, key_id=key_id)
            return session.get(Grant, grant.id)

    # --- evidence -------------------------------------------------------------------------------------
    def _evidence(self, grant: Grant) -> Evidence:
        """Every trace of this grant's order calls the site's database shows now."""
        found = self.runtime.reader.user_id_by_email(grant.email) if grant.email else None
        user_id = found if found is not None else grant.user_id
        keys = self.traces.keys(user_id, grant.term_id, grant.id) if user_id is not None else []
        orders = []
        uses_orders = self.runtime.settings.memberlux.order_dialect == "woocommerce"
        if uses_orders and grant.first_ordered_at is not None and grant.email:
            orders = self.traces.orders(TraceCustomer(user_id, grant.email), grant.product_id,
                                        grant.first_ordered_at - timedelta(minutes=2))
        foreign: frozenset[int] = frozenset()
        if orders:
            with self.runtime.sessions() as session:
                foreign = frozenset(int(v) for v in session.scalars(
                    sa.select(Grant.order_id).where(Grant.order_id.in_([o.order_id for o in orders]),
                                                    Grant.id != grant.id)))
        return Evidence(grant_ref=grant.id, first_ordered_at=grant.first_ordered_at, keys=keys, orders=orders,
                        foreign_order_ids=foreign)

    def _look(self, grant: Grant) -> tuple[Judgement, datetime]:
        started = self.runtime.clock.now()
        judgement = judge(self._evidence(grant), now=started, settle_until=grant.settle_until)
        return judgement, started

    def _read(self, read: Callable[[], _T], grant: Grant, answer: dict | None) -> _T:
        """A read of the site made while an order's answer is not recorded yet: when it fails, the answer is
        recorded before the error goes on (that the site answered is what keeps the grant from new orders)."""
        try:
            return read()
        except Exception:
            if answer is not None:
                self._attempt(grant, **answer)
            raise

    def _key_rows(self, key_ids: tuple[int, ...]) -> list[KeyRow]:
        return self.runtime.reader.key_rows_by_ids(key_ids)

    def _conclude(self, grant: Grant, judgement: Judgement, kind: str, started: datetime, *,
                  answer: dict | None = None) -> Grant | None:
        """Apply a judgement that ends the search (a key found, or nothing more to wait for).

        ``answer`` is an order's answer not recorded yet: a key found is recorded with it in one transaction;
        any other conclusion records it first. Returns None (with ``answer`` still unrecorded) otherwise."""
        verdict = judgement.verdict
        if verdict in (Verdict.CONFIRMED, Verdict.CONFIRMED_UNTAGGED):
            rows = self._read(lambda: self._key_rows(judgement.keys), grant, answer)
            if rows:
                return self._succeed(grant, rows, order_id=grant.order_id, attempt=(kind, started, judgement.reason),
                                     untagged=verdict is Verdict.CONFIRMED_UNTAGGED, answer=answer)
        if verdict is Verdict.DUPLICATED:
            rows = self._read(lambda: self._key_rows(judgement.keys), grant, answer)
            if len(rows) > 1:
                return self._duplicated(grant, rows, kind, started, judgement.reason, answer=answer)
        if verdict is Verdict.ORDER_WITHOUT_KEY:
            if answer is not None:
                self._attempt(grant, **answer)
            meta = grant.meta or {}
            reorders = int(meta.get("reorders_without_key", 0))
            payments = payments_state(self.runtime.reader, multisite=bool(self.runtime.settings.wordpress.base_prefix))
            # No answer said the order was complete, and the site makes keys for orders: the call died after
            # the order and before the key (a PHP worker killed mid-way). Settled, it cannot add a key any
            # more, so a new order is safe. When the site cannot make keys, new orders would only add
            # orders: the grant stops for an admin. When that cannot be told, one new order is tried.
            limit = {True: MAX_REORDERS_WITHOUT_KEY, None: 1, False: 0}[payments.makes_keys]
            if not meta.get("order_answered") and reorders < limit:
                meta = {**meta, "reorders_without_key": reorders + 1}
                self._attempt(grant, kind, "order_without_key", started,
                              detail=f"{judgement.reason}; no answer said it was complete and {payments.reason}: "
                                     "ordering once more", grant_changes={"status": QUEUED, "meta": meta})
                grant.status, grant.meta = QUEUED, meta
                return self.deliver(grant, looked=True)
            self._attempt(grant, kind, "not_found", started, detail=f"{judgement.reason}; {payments.reason}")
            return self._fail(grant, Message("grants.not_found_after_order", {"reason": judgement.reason,
                                                                              "payments": payments.reason}),
                              outcome_unknown=False)
        return None

    # --- unknown outcomes ------------------------------------------------------------------------------
    def _interrupted(self, grant: Grant) -> Grant:
        now = self.runtime.clock.now()
        settle_until = max(grant.settle_until or now, now + self.settle)
        self._attempt(grant, "order", "interrupted", now, detail="the worker stopped during the order call; "
                      f"no new order before {settle_until:%Y-%m-%d %H:%M:%S} UTC",
                      grant_changes={"status": UNKNOWN, "outcome_unknown": True, "settle_until": settle_until})
        grant.status, grant.outcome_unknown, grant.settle_until = UNKNOWN, True, settle_until
        return grant

    def resolve_unknown(self, grant: Grant) -> Grant:
        """Look for every trace of the earlier call(s); order again only when settled and traceless."""
        judgement, started = self._look(grant)
        concluded = self._conclude(grant, judgement, "lookup", started)
        if concluded is not None:
            return concluded
        now = self.runtime.clock.now()
        if judgement.verdict is Verdict.ORDERED:
            # An order of ours exists: from now on it is only read back, never ordered again.
            self._attempt(grant, "lookup", "trace", started, detail=judgement.reason,
                          order_id=judgement.orders[-1] if judgement.orders else None,
                          grant_changes={"status": CONFIRMING, "outcome_unknown": False,
                                         "order_id": grant.order_id or (judgement.orders[-1] if judgement.orders else None)})
            return self._release(grant, next_attempt_at=self._next_look(now, grant.settle_until))
        if judgement.verdict is Verdict.SAFE_TO_ORDER:
            # Settled, and no trace at all: order again, in this same pass.
            self._attempt(grant, "lookup", "settled", started, detail=judgement.reason,
                          grant_changes={"status": QUEUED})
            grant.status = QUEUED
            return self.deliver(grant, looked=True)
        # Nothing conclusive yet (or keys that vanished between two reads): never order, look again.
        self._attempt(grant, "lookup", "not_found", started, detail=judgement.reason)
        return self._release(grant, next_attempt_at=self._next_look(now, grant.settle_until))

    def _customer_busy(self, grant: Grant) -> str | None:
        """Another grant for the same e-mail whose order call is running or may still run on the site.

        WordPress finds or creates the customer by e-mail without any lock; two orders for a new
        e-mail at once can create two accounts (each with one key) or none.
        """
        if not grant.email:
            return None
        with self.runtime.sessions() as session:
            return session.scalar(sa.select(Grant.id).where(
                Grant.status.in_((DELIVERING, UNKNOWN)), Grant.id != grant.id,
                sa.func.lower(Grant.email) == grant.email.lower()).limit(1))

    def _next_look(self, now: datetime, settle_until: datetime | None) -> datetime:
        following = now + self.poll
        return min(following, settle_until) if settle_until is not None and settle_until > now else following

    # --- ordering -------------------------------------------------------------------------------------
    def deliver(self, grant: Grant, *, looked: bool = False) -> Grant:
        if grant.orders_sent and not looked:
            # An earlier call reached the site (an admin retry, or a grant from before an upgrade): look first.
            judgement, started = self._look(grant)
            concluded = self._conclude(grant, judgement, "lookup", started)
            if concluded is not None:
                return concluded
            if judgement.verdict is not Verdict.SAFE_TO_ORDER:
                self._attempt(grant, "lookup", "trace" if judgement.verdict is Verdict.ORDERED else "not_found",
                              started, detail=judgement.reason,
                              grant_changes={"status": CONFIRMING if judgement.verdict is Verdict.ORDERED else UNKNOWN})
                return self._release(grant, next_attempt_at=self._next_look(started, grant.settle_until))
            self._attempt(grant, "lookup", "settled", started, detail=judgement.reason)
        user_existed = grant.user_existed
        if user_existed is None:
            user_existed = bool(grant.email) and self.runtime.reader.user_id_by_email(grant.email or "") is not None
        started = self.runtime.clock.now()
        first_ordered_at = grant.first_ordered_at or started
        # Committed before the call: a crash from here on is seen by the next claimer as an unknown outcome.
        self._update(grant, status=DELIVERING, outcome_unknown=True, attempts=grant.attempts + 1,
                     orders_sent=grant.orders_sent + 1, first_ordered_at=first_ordered_at, user_existed=user_existed)
        rival = self._customer_busy(grant)
        if rival is not None:
            # Checked after our own mark is committed, so of two grants marked at once each sees the other
            # and both step back (jitter then lets one go first): never two orders for one customer at once.
            self._update(grant, status=QUEUED, outcome_unknown=grant.outcome_unknown, orders_sent=grant.orders_sent,
                         first_ordered_at=grant.first_ordered_at)
            wait = self.poll.total_seconds() * self.rng.uniform(0.2, 1.0)
            return self._release(grant, next_attempt_at=self.runtime.clock.now() + timedelta(seconds=wait),
                                 **error_values(grant.meta, Message("grants.rival", {"rival": rival})))
        grant.attempts += 1
        grant.status, grant.outcome_unknown, grant.user_existed = DELIVERING, True, user_existed
        # Written again with the call's outcome so that the copy returned has it; not set on the copy before,
        # as the read-back right after the answer looks for keys, not orders, as it always did.
        marked = {"first_ordered_at": first_ordered_at}
        customer = Customer(email=grant.email or "", first_name=grant.first_name or "", last_name=grant.last_name or "",
                            patronymic=grant.patronymic or "", phone=grant.phone or "")
        try:
            labels = OrderLabels(channel=grant.channel or "", source=grant.source_label or "")
            if self.runtime.settings.memberlux.order_dialect == "woocommerce":
                result = self.rest.order_product(customer, int(grant.product_id or 0), grant.id, labels)
            else:
                result = self.rest.order_term(customer, int(grant.term_id or 0), int(grant.duration or 0),
                                              grant.units or "months", grant.id,
                                              meta={"external_id": grant.external_id, "source": "mlsidecar"},
                                              labels=labels)
        except PermanentRestError as exc:
            self._attempt(grant, "order", "permanent", started, status=exc.status, detail=str(exc),
                          grant_changes={"orders_sent": grant.orders_sent})
            return self._fail(grant, Message("grants.refused", {"detail": str(exc)}), outcome_unknown=False)
        except UnknownOutcomeError as exc:
            now = self.runtime.clock.now()
            settle_until = now + self.settle
            self._attempt(grant, "order", "unknown", started, status=exc.status,
                          detail=f"{exc}; no new order before {settle_until:%Y-%m-%d %H:%M:%S} UTC",
                          grant_changes={"status": UNKNOWN, "outcome_unknown": True, "settle_until": settle_until,
                                         **marked, **error_values(grant.meta, Message("grants.unknown_outcome",
                                                                            {"detail": str(exc)}))})
            return self._release(grant, next_attempt_at=now + self.poll)
        except RestError as exc:  # unreachable: nothing left this process
            self._attempt(grant, "order", "unreachable", started, status=exc.status, detail=str(exc),
                          grant_changes={"orders_sent": grant.orders_sent, "outcome_unknown": False, **marked})
            return self._transient(grant, Message("grants.unreachable", {"detail": str(exc)}), status=QUEUED)
        grant.orders_sent += 1
        now = self.runtime.clock.now()
        meta = {**(grant.meta or {}), "order_answered": True}
        answer = {"kind": "order", "outcome": "ok", "started": started, "finished": now, "status": result.status,
                  "detail": f"order {result.order_id} in {result.elapsed:.2f} s", "order_id": result.order_id,
                  "grant_changes": {"status": CONFIRMING, "outcome_unknown": False, "order_id": result.order_id,
                                    "settle_until": now + self.settle, "meta": meta, **marked}}
        grant.meta = meta
        grant.status, grant.order_id, grant.outcome_unknown = CONFIRMING, result.order_id, False
        grant.settle_until = now + self.settle
        # The key is read back before the answer is recorded, so that a key found is one commit with it.
        # Until that commit the store still says ``delivering``: a crash meanwhile is seen like one during
        # the call (an unknown outcome, looked up, never ordered again before the settle time).
        return self.confirm(grant, answer=answer)

    def confirm(self, grant: Grant, *, answer: dict | None = None) -> Grant:
        """An order exists: read its key back until the settle time; never order again.

        ``answer`` is the order's answer, recorded with the key found or else before anything else."""
        judgement, started = self._read(lambda: self._look(grant), grant, answer)
        concluded = self._conclude(grant, judgement, "confirm", started, answer=answer)
        if concluded is not None:
            return concluded
        if answer is not None:
            self._attempt(grant, **answer)
        if judgement.verdict is Verdict.SAFE_TO_ORDER:
            # The site said it made an order, yet nothing of it shows after the settle time.
            self._attempt(grant, "confirm", "not_found", started, detail=judgement.reason)
            return self._fail(grant, Message("grants.no_key_after_order", {"order": grant.order_id, "grant": grant.id}),
                              outcome_unknown=False)
        self._attempt(grant, "confirm", "not_found", started, detail=judgement.reason)
        return self._release(grant, next_attempt_at=self._next_look(started, grant.settle_until))

    # --- endings ------------------------------------------------------------------------------------------
    def _grant_event(self, grant: Grant, row: KeyRow, order_id: int | None) -> dict:
        return {"grant_id": grant.id, "channel": grant.channel, "external_id": grant.external_id,
                "email": grant.email or "", "user_id": row.user_id, "term_id": row.term_id, "order_id": order_id,
                "key_id": row.key_id, "date_start": row.date_start.isoformat() if row.date_start else None,
                "date_end": None if row.is_unlimited or not row.date_end else row.date_end.isoformat(),
                "is_unlimited": bool(row.is_unlimited)}

    def _succeed(self, grant: Grant, rows: list[KeyRow], order_id: int | None,
                 attempt: tuple[str, datetime, str], *, untagged: bool = False, answer: dict | None = None) -> Grant:
        """Record the read-back that found the key, the audit event and the final state: one transaction."""
        row = next((r for r in rows if r.term_id == grant.term_id), rows[0])
        kind, started, detail = attempt
        now = self.runtime.clock.now()
        # Ordered more than once: an earlier call could still add a key; keep reading for a while.
        verify_until = now + self.settle if grant.orders_sent > 1 else None
        released = self._after(grant, answer, kind, "found", started, detail=detail, action="grant.succeeded",
                      key_id=row.key_id,
                      user_id=row.user_id, term_id=row.term_id, date_start=str(row.date_start),
                      date_end=str(row.date_end), order_id=order_id, matched_without_utm_id=untagged or None,
                      events=[("grant.succeeded", self._grant_event(grant, row, order_id))],
                      grant_changes={"status": SUCCEEDED, "outcome_unknown": False, "last_error": None,
                                     "completed_at": now, "key_id": row.key_id,
                                     "user_id": row.user_id, "date_start": row.date_start,
                                     "date_end": None if row.is_unlimited else row.date_end,
                                     "is_unlimited": row.is_unlimited, "order_id": order_id,
                                     "verify_until": verify_until, "claimed_by": None, "claim_expires_at": None},
                      reread=True)
        log.info("grant %s succeeded: key %s for user %s, level %s until %s", grant.id, row.key_id, row.user_id,
                 row.term_id, row.date_end)
        if released is not None and self.runtime.settings.bridge.welcome_email.enabled:
            from .welcome import send_welcome

            send_welcome(self.runtime, released)
        return released

    def _duplicated(self, grant: Grant, rows: list[KeyRow], kind: str, started: datetime, reason: str, *,
                    already_succeeded: bool = False, answer: dict | None = None) -> Grant:
        """More than one key carries the grant's id: final, loud, with the keys listed for an admin."""
        rows = sorted(rows, key=lambda r: r.key_id)
        row = next((r for r in rows if r.term_id == grant.term_id), rows[0])
        now = self.runtime.clock.now()
        key_ids = [r.key_id for r in rows]
        payload = {**self._grant_event(grant, row, grant.order_id), "key_ids": key_ids,
                   "keys": [{"key_id": r.key_id, "term_id": r.term_id,
                             "date_start": r.date_start.isoformat() if r.date_start else None,
                             "date_end": None if r.is_unlimited or not r.date_end else r.date_end.isoformat()}
                            for r in rows]}
        events = [] if already_succeeded else [("grant.succeeded", self._grant_event(grant, row, grant.order_id))]
        events.append(("grant.duplicated", payload))
        released = self._after(grant, answer, kind, "duplicated", started, detail=reason, action="grant.duplicated",
                               key_ids=key_ids,
                      user_id=row.user_id, term_id=row.term_id, events=events,
                      grant_changes={"status": DUPLICATED, "outcome_unknown": False, "completed_at": now,
                                     "key_id": row.key_id, "user_id": row.user_id, "date_start": row.date_start,
                                     "date_end": None if row.is_unlimited else row.date_end,
                                     "is_unlimited": row.is_unlimited, "verify_until": None,
                                     **error_values({**(grant.meta or {}), "duplicate_keys": key_ids},
                                                    Message("grants.duplicated", {"count": len(rows),
                                                                                  "keys": ", ".join(map(str, key_ids))})),
                                     "claimed_by": None, "claim_expires_at": None},
                               reread=True)
        log.warning("grant %s is duplicated: keys %s carry its id", grant.id, key_ids)
        assert released is not None
        return released

    # --- late duplicates ----------------------------------------------------------------------------------
    def verify_recent(self, limit: int = 200) -> list[Step]:
        """Re-read succeeded grants that were ordered more than once, until their verify instant."""
        now = self.runtime.clock.now()
        with self.runtime.sessions() as session:
            ids = list(session.scalars(sa.select(Grant.id).where(Grant.status == SUCCEEDED, Grant.verify_until > now,
                                                                 Grant.claimed_by.is_(None))
                                       .order_by(Grant.verify_until).limit(limit)))
        steps = []
        for grant_id in ids:
            with unit_of_work(self.runtime.sessions) as session:
                won = session.execute(sa.update(Grant).where(Grant.id == grant_id, Grant.status == SUCCEEDED,
                                                             Grant.claimed_by.is_(None))
                                      .values(claimed_by=self._claim_name(), claim_expires_at=now + self.lease)).rowcount
                grant = session.get(Grant, grant_id) if won else None
            if grant is None:
                continue
            try:
                judgement, started = self._look(grant)
                rows = self._key_rows(judgement.keys) if judgement.verdict is Verdict.DUPLICATED else []
                if len(rows) > 1:
                    grant = self._duplicated(grant, rows, "verify", started, judgement.reason, already_succeeded=True)
                else:
                    grant = self._release(grant)
            except ClaimLost:
                continue
            steps.append(Step(grant.id, "verify", grant.status))
        return steps


def _lead_rejected(grant: Grant, exc: IntakeRejected) -> Message:
    """Why an amoCRM lead cannot be granted: the intake's reason and each field's, as the API words them."""
    lead = grant.amo_lead_id
    if exc.said is None:
        detail = exc.message + "".join(f"; {e.field}: {e.message}" for e in exc.errors)
        return Message("grants.lead_unreadable", {"lead": lead, "detail": detail})
    fields = [replace(e.said, field=e.field) for e in exc.errors]
    if fields:
        return Message("grants.lead_rejected_fields", {"lead": lead, "reason": exc.said, "fields": fields})
    return Message("grants.lead_rejected", {"lead": lead, "reason": exc.said})


def _utc(moment: datetime) -> datetime:
    """Stored instants are naive UTC on some databases."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _day(record: dict | None, name: str):
    from datetime import date

    return date.fromisoformat(record[name]) if record and record.get(name) else None


class OutboxRunner:
    """The worker's delivery loop: a dispatcher thread and ``concurrency`` delivery threads."""

    def __init__(self, deliverer: GrantDeliverer, *, concurrency: int, poll_seconds: float) -> None:
        self.deliverer = deliverer
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.stopping = threading.Event()
        self.wakeup = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="grant-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self.stopping.set()
        self.wakeup.set()
        if self._thread:
            self._thread.join(timeout)

    def _verify(self) -> None:
        try:
            self.deliverer.verify_recent()
        except Exception:  # the store or WordPress may be restarting; try again later
            log.exception("outbox: cannot re-read recently succeeded grants")

    def _run(self) -> None:
        verify_every = float(self.deliverer.settings.unknown_poll_seconds)
        next_verify = 0.0
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="grant-delivery") as pool:
            while not self.stopping.is_set():
                if time.monotonic() >= next_verify:
                    self._verify()
                    next_verify = time.monotonic() + verify_every
                try:
                    ids = self.deliverer.due(self.concurrency * 4)
                except Exception:  # the store may be restarting; try again later
                    log.exception("outbox: cannot read due grants")
                    ids = []
                if ids:
                    for future in [pool.submit(self._safe_process, gid) for gid in ids]:
                        future.result()
                    continue
                self.wakeup.wait(self.poll_seconds)
                self.wakeup.clear()

    def _safe_process(self, grant_id: str) -> None:
        try:
            self.deliverer.process_by_id(grant_id)
        except Exception:  # one bad grant must not stop the others
            log.exception("outbox: grant %s could not be processed", grant_id)
