"""Delivering grants to MemberLux: claim, (look up), order, confirm — at most one key per grant.

Every order carries ``utm_source=mlsidecar&utm_id=<grant id>``; MemberLux stores those in
``keys_meta`` for the key it activates (core.md 5.6). That is what makes a retry safe:

* before an order is sent the grant is marked ``delivering`` with ``outcome_unknown`` set, and that
  is committed; a worker killed during the call leaves exactly that state behind;
* whoever picks the grant up next (after the claim lease, longer than the REST timeout, expired)
  first looks the grant id up in ``keys_meta``; if a key is there, the grant is confirmed, not
  ordered again;
* once the site accepted an order the grant is ``confirming``: from then on it is only ever read
  back, never ordered again, even if the read-back keeps failing.

Claims are conditional UPDATEs in our store, so two workers (or a worker and a web request with
``?wait=``) never process the same grant at the same time.
"""

from __future__ import annotations

import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from sidecar.bootstrap import Runtime
from sidecar.domain.access import KeyRow
from sidecar.domain.grants import RawGrant
from sidecar.logs import mask_emails
from sidecar.memberlux.rest import Customer, MemberLuxRestClient, PermanentRestError, RestError, UnknownOutcomeError
from sidecar.store import audit
from sidecar.webhooks.events import emit
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import (
    CONFIRMING, DELIVERING, FAILED, FETCHING, QUEUED, SUCCEEDED, Grant, GrantAttempt,
)

from .amocrm import AmoApiError, AmoClient, AmoFetcher, AmoFieldNames, AmoPayloadError
from .service import BridgeService, IntakeRejected, emit_accepted

log = logging.getLogger(__name__)


def _holder_name() -> str:
    from sidecar.worker import holder_name  # the worker module imports this one

    return holder_name()

WORKABLE = (QUEUED, FETCHING, DELIVERING, CONFIRMING)
CONFIRM_ATTEMPTS = 6          # read-backs after an accepted order before giving up on seeing the key
CONFIRM_BASE_SECONDS = 10


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
                 rng: random.Random | None = None, holder: str | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.bridge
        self.service = service or BridgeService(runtime)
        self.rest = rest_client or runtime.rest_client()
        self.amo_fetcher = amo_fetcher
        self.rng = rng or random.Random()
        self.holder = holder or _holder_name()
        self.lease = timedelta(seconds=runtime.settings.memberlux.timeout_seconds + 60)

    # --- claiming ------------------------------------------------------------------------------
    def _claimable(self, now: datetime) -> sa.ColumnElement[bool]:
        return sa.and_(Grant.status.in_(WORKABLE), Grant.next_attempt_at <= now,
                       sa.or_(Grant.claim_expires_at.is_(None), Grant.claim_expires_at < now))

    def due(self, limit: int) -> list[str]:
        now = self.runtime.clock.now()
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(Grant.id).where(self._claimable(now))
                                        .order_by(Grant.next_attempt_at, Grant.id).limit(limit)))

    def claim(self, grant_id: str) -> Grant | None:
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            won = session.execute(
                sa.update(Grant).where(Grant.id == grant_id, self._claimable(now))
                .values(claimed_by=self.holder, claim_expires_at=now + self.lease)
            ).rowcount
            return session.get(Grant, grant_id) if won else None

    def _release(self, grant: Grant, **changes) -> Grant:
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            session.execute(sa.update(Grant).where(Grant.id == grant.id, Grant.claimed_by == self.holder)
                            .values(claimed_by=None, claim_expires_at=None, updated_at=now, **changes))
            return session.get(Grant, grant.id)

    def release(self, grant: Grant) -> Grant:
        """Give a claimed grant back untouched, for whoever processes it next."""
        return self._release(grant)

    def _update(self, grant_id: str, **changes) -> None:
        with unit_of_work(self.runtime.sessions) as session:
            session.execute(sa.update(Grant).where(Grant.id == grant_id)
                            .values(updated_at=self.runtime.clock.now(), **changes))

    # --- bookkeeping -------------------------------------------------------------------------------
    def _attempt(self, grant: Grant, kind: str, outcome: str, started: datetime, *, status: int | None = None,
                 detail: str | None = None, action: str | None = None, grant_changes: dict | None = None,
                 event: tuple[str, dict] | None = None, **audit_details) -> None:
        """Record one attempt (and its audit event), applying ``grant_changes`` in the same transaction."""
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            number = (session.scalar(sa.select(sa.func.count()).select_from(GrantAttempt)
                                     .where(GrantAttempt.grant_id == grant.id)) or 0) + 1
            session.add(GrantAttempt(grant_id=grant.id, number=number, kind=kind, started_at=started, finished_at=now,
                                     outcome=outcome, http_status=status, detail=(detail or "")[:1000] or None,
                                     elapsed_ms=int((now - started).total_seconds() * 1000), worker=self.holder))
            audit.record(session, subject_type="grant", subject_id=grant.id, action=action or f"{kind}.{outcome}",
                         at=now, actor=self.holder, http_status=status, detail=(detail or None), **audit_details)
            if grant_changes:
                session.execute(sa.update(Grant).where(Grant.id == grant.id).values(updated_at=now, **grant_changes))
            if event is not None:
                emit(session, event[0], event[1], now)

    def _backoff(self, attempts: int) -> timedelta:
        base, cap = self.settings.retry_base_seconds, self.settings.retry_max_seconds
        delay = min(cap, base * 2 ** max(0, attempts - 1))
        return timedelta(seconds=delay * self.rng.uniform(0.5, 1.5))

    def _age_clock_start(self, grant: Grant) -> datetime:
        retried = (grant.meta or {}).get("retried_at")
        return max(grant.created_at, datetime.fromisoformat(retried)) if retried else grant.created_at

    def _transient(self, grant: Grant, reason: str, **changes) -> Grant:
        now = self.runtime.clock.now()
        attempts = grant.attempts
        if now - self._age_clock_start(grant) > timedelta(hours=self.settings.give_up_after_hours):
            return self._fail(grant, f"gave up after {attempts} attempts over {self.settings.give_up_after_hours} h; "
                                     f"last error: {reason}", **changes)
        return self._release(grant, next_attempt_at=now + self._backoff(attempts), last_error=reason[:500], **changes)

    def _fail(self, grant: Grant, reason: str, **changes) -> Grant:
        now = self.runtime.clock.now()
        # Always final: giving up from ``_transient`` passes the caller's retry changes (status=queued).
        changes["status"] = FAILED
        released = self._release(grant, completed_at=now, last_error=reason[:500], **changes)
        with unit_of_work(self.runtime.sessions) as session:
            audit.record(session, subject_type="grant", subject_id=grant.id, action="grant.failed", at=now,
                         actor=self.holder, reason=reason)
            emit(session, "grant.failed", {"grant_id": grant.id, "channel": grant.channel, "external_id": grant.external_id,
                                           "email": grant.email or "", "term_id": grant.term_id,
                                           "error": reason[:500]}, now)
        log.warning("grant %s failed: %s", grant.id, mask_emails(reason))
        return released

    # --- processing ---------------------------------------------------------------------------------
    def process(self, grant: Grant) -> Step:
        if grant.status == FETCHING:
            grant = self.fetch_crm_data(grant)
            if grant.status != QUEUED:
                return Step(grant.id, "fetch", grant.status)
        if grant.status == CONFIRMING:
            grant = self.confirm(grant)
            return Step(grant.id, "confirm", grant.status)
        if grant.status in (QUEUED, DELIVERING):
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
        self._update(grant.id, attempts=grant.attempts + 1)
        grant.attempts += 1
        try:
            fields = self._fetcher().fetch_grant_fields(int(grant.amo_lead_id or 0), amo_field_names(self.runtime))
        except AmoApiError as exc:
            self._attempt(grant, "crm_fetch", "unknown" if exc.transient else "permanent", started,
                          status=exc.status, detail=str(exc))
            if exc.transient:
                return self._transient(grant, f"amoCRM: {exc}")
            return self._fail(grant, f"amoCRM: {exc}")
        except AmoPayloadError as exc:
            self._attempt(grant, "crm_fetch", "permanent", started, detail=str(exc))
            return self._fail(grant, f"amoCRM lead {grant.amo_lead_id}: {exc}")
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
            return self._fail(grant, f"amoCRM lead {grant.amo_lead_id}: {detail}", meta={**(grant.meta or {}), "rejection": exc.code})
        self._attempt(grant, "crm_fetch", "ok", started, action="crm.fetched", contact_id=fields.contact_id,
                      email=spec.email, term_id=spec.term_id, level=level_name, duration=spec.duration, units=spec.units,
                      start_date_raw=fields.start_date_raw, product_id=product_id, product=product_text)
        meta = {**(grant.meta or {}), **fields.legacy_meta(),
                "start_date": fields.start_date.isoformat() if fields.start_date else None}
        with unit_of_work(self.runtime.sessions) as session:
            session.execute(sa.update(Grant).where(Grant.id == grant.id).values(
                status=QUEUED, email=spec.email, first_name=spec.first_name or None, last_name=spec.last_name or None,
                phone=spec.phone or None, term_id=spec.term_id, duration=spec.duration, units=spec.units,
                product_id=product_id, meta=meta, updated_at=self.runtime.clock.now(), last_error=None))
            fetched = session.get(Grant, grant.id)
            emit_accepted(session, fetched)   # now it says what it grants
            return fetched

    # --- ordering -------------------------------------------------------------------------------------
    def _keys_of(self, grant: Grant, user_id: int | None = None) -> list[KeyRow]:
        # Drive the read-back by the user (indexed) when the e-mail is known; keys_meta.utm_id has no index.
        if user_id is None and grant.email:
            user = self.runtime.reader.user_by_email(grant.email)
            user_id = user.id if user else None
        return self.runtime.reader.key_rows_by_utm_id(grant.id, user_id)

    def deliver(self, grant: Grant) -> Grant:
        interrupted = grant.status == DELIVERING or grant.outcome_unknown
        if interrupted:
            started = self.runtime.clock.now()
            rows = self._keys_of(grant)
            if rows:
                return self._succeed(grant, rows, order_id=grant.order_id,
                                     attempt=("lookup", started, f"keys_meta.utm_id = {grant.id}: {len(rows)} key(s)"))
            self._attempt(grant, "lookup", "not_found", started, detail=f"keys_meta.utm_id = {grant.id}: no key")
        prior_unknown = grant.outcome_unknown
        existing_user = self.runtime.reader.user_by_email(grant.email) if grant.email else None
        user_existed = grant.user_existed if grant.user_existed is not None else existing_user is not None
        # Committed before the call: a crash from here on is seen by the next claimer as "look up first".
        self._update(grant.id, status=DELIVERING, outcome_unknown=True, attempts=grant.attempts + 1,
                     user_existed=user_existed)
        grant.attempts += 1
        started = self.runtime.clock.now()
        customer = Customer(email=grant.email or "", first_name=grant.first_name or "", last_name=grant.last_name or "",
                            patronymic=grant.patronymic or "", phone=grant.phone or "")
        try:
            if self.runtime.settings.memberlux.order_dialect == "woocommerce":
                result = self.rest.order_product(customer, int(grant.product_id or 0), grant.id)
            else:
                result = self.rest.order_term(customer, int(grant.term_id or 0), int(grant.duration or 0),
                                              grant.units or "months", grant.id,
                                              meta={"external_id": grant.external_id, "source": "mlsidecar"})
        except PermanentRestError as exc:
            self._attempt(grant, "order", "permanent", started, status=exc.status, detail=str(exc))
            return self._fail(grant, f"MemberLux refused the order: {exc}", outcome_unknown=prior_unknown)
        except UnknownOutcomeError as exc:
            self._attempt(grant, "order", "unknown", started, status=exc.status, detail=str(exc))
            return self._transient(grant, f"outcome unknown: {exc}", status=QUEUED, outcome_unknown=True)
        except RestError as exc:  # unreachable: nothing was sent
            self._attempt(grant, "order", "unreachable", started, status=exc.status, detail=str(exc))
            return self._transient(grant, f"site unreachable: {exc}", status=QUEUED, outcome_unknown=prior_unknown)
        self._attempt(grant, "order", "ok", started, status=result.status,
                      detail=f"order {result.order_id} in {result.elapsed:.2f} s", order_id=result.order_id,
                      grant_changes={"status": CONFIRMING, "outcome_unknown": False, "order_id": result.order_id})
        grant.status, grant.order_id, grant.outcome_unknown = CONFIRMING, result.order_id, False
        return self.confirm(grant, existing_user.id if existing_user else None)

    def confirm(self, grant: Grant, user_id: int | None = None) -> Grant:
        started = self.runtime.clock.now()
        rows = self._keys_of(grant, user_id)
        if rows:
            return self._succeed(grant, rows, order_id=grant.order_id,
                                 attempt=("confirm", started, f"{len(rows)} key(s) carry utm_id {grant.id}"))
        tries = int((grant.meta or {}).get("confirm_attempts", 0)) + 1
        self._attempt(grant, "confirm", "not_found", started, detail=f"read-back {tries} of {CONFIRM_ATTEMPTS}")
        meta = {**(grant.meta or {}), "confirm_attempts": tries}
        if tries >= CONFIRM_ATTEMPTS:
            return self._fail(grant, f"order {grant.order_id} was accepted but no activated key carries utm_id {grant.id}; "
                                     "check that MEMBERLUX PAYMENTS auto-activation is on (mlsidecar doctor). "
                                     "The grant is not ordered again.", status=FAILED, meta=meta)
        delay = timedelta(seconds=CONFIRM_BASE_SECONDS * 2 ** (tries - 1))
        return self._release(grant, status=CONFIRMING, meta=meta, next_attempt_at=self.runtime.clock.now() + delay)

    def _succeed(self, grant: Grant, rows: list[KeyRow], order_id: int | None,
                 attempt: tuple[str, datetime, str]) -> Grant:
        """Record the read-back that found the key, the audit event and the final state: one transaction."""
        row = next((r for r in rows if r.term_id == grant.term_id), rows[0])
        kind, started, detail = attempt
        self._attempt(grant, kind, "found", started, detail=detail, action="grant.succeeded", key_id=row.key_id,
                      user_id=row.user_id, term_id=row.term_id, date_start=str(row.date_start),
                      date_end=str(row.date_end), order_id=order_id,
                      extra_keys=[r.key_id for r in rows if r is not row] or None,
                      event=("grant.succeeded", {
                          "grant_id": grant.id, "channel": grant.channel, "external_id": grant.external_id,
                          "email": grant.email or "", "user_id": row.user_id, "term_id": row.term_id, "order_id": order_id,
                          "key_id": row.key_id, "date_start": row.date_start.isoformat() if row.date_start else None,
                          "date_end": None if row.is_unlimited or not row.date_end else row.date_end.isoformat(),
                          "is_unlimited": bool(row.is_unlimited)}),
                      grant_changes={"status": SUCCEEDED, "outcome_unknown": False, "last_error": None,
                                     "completed_at": self.runtime.clock.now(), "key_id": row.key_id,
                                     "user_id": row.user_id, "date_start": row.date_start,
                                     "date_end": None if row.is_unlimited else row.date_end,
                                     "is_unlimited": row.is_unlimited, "order_id": order_id,
                                     "claimed_by": None, "claim_expires_at": None})
        with self.runtime.sessions() as session:
            released = session.get(Grant, grant.id)
        log.info("grant %s succeeded: key %s for user %s, level %s until %s", grant.id, row.key_id, row.user_id,
                 row.term_id, row.date_end)
        if released is not None and self.runtime.settings.bridge.welcome_email.enabled:
            from .welcome import send_welcome

            send_welcome(self.runtime, released)
        return released


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

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="grant-delivery") as pool:
            while not self.stopping.is_set():
                try:
                    ids = self.deliverer.due(self.concurrency * 4)
                except Exception:  # noqa: BLE001 - the store may be restarting; try again later
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
        except Exception:  # noqa: BLE001 - one bad grant must not stop the others
            log.exception("outbox: grant %s could not be processed", grant_id)
