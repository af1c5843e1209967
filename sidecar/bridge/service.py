"""Accepting grant requests: validation against the site, idempotency, the durable record.

A valid request becomes one ``mls_grants`` row (the outbox entry) in the same transaction as its
audit events; the answer is 202 and the worker delivers it. Idempotency is decided by the unique
``idempotency_key``: a second request for the same deal gets the first grant back, and a request
reusing a key with a different payload is refused (409), never silently merged.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from sidecar.bootstrap import Runtime
from sidecar.domain.grants import FieldError, GrantSpec, validate_grant
from sidecar.domain.messages import Message
from sidecar.memberlux.products import Override, ProductCatalog
from sidecar.store import audit
from sidecar.webhooks.events import emit
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import CANCELLED, FAILED, FETCHING, FINAL_STATES, OPEN_STATES, QUEUED, SHADOW, Grant

from .auth import Principal
from .intake_writer import IntakeWriter, KeyTaken, PendingGrant
from .parsers import ParsedRequest
from .reasons import error_values

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_grant_id(now: datetime) -> str:
    """Time-ordered, unguessable, short enough for keys_meta.utm_id (60 characters)."""
    millis = int(now.timestamp() * 1000)
    stamp = "".join(_CROCKFORD[(millis >> shift) & 31] for shift in range(45, -1, -5))
    # 32 divides 256, so each random byte's low five bits pick a letter uniformly.
    return "g" + stamp + "".join(_CROCKFORD[b & 31] for b in secrets.token_bytes(12))


class IntakeRejected(Exception):
    def __init__(self, status: int, code: str, message: str, *, errors: list[FieldError] | None = None,
                 extra: dict[str, Any] | None = None, said: Message | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message     # the API's English (a contract)
        self.said = said           # the same for the pages, when a stored reason repeats it
        self.errors = errors or []
        self.extra = extra or {}


@dataclass
class Acceptance:
    grant: Grant
    replayed: bool


@dataclass
class IntakeContext:
    channel: str                 # legacy | api | amocrm
    principal: Principal
    source_ip: str | None = None
    idempotency_header: str | None = None
    extra_meta: dict[str, Any] = field(default_factory=dict)


class _LevelCache:
    """Level ids, refreshed every ``ttl`` seconds: every intake checks the level, and levels rarely change."""

    def __init__(self, runtime: Runtime, ttl: float = 30.0) -> None:
        self.runtime, self.ttl = runtime, ttl
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._names: dict[int, str] = {}

    def name(self, term_id: int) -> str | None:
        with self._lock:
            if time.monotonic() - self._loaded_at > self.ttl:
                self._names = {level.term_id: level.name for level in self.runtime.reader.levels()}
                self._loaded_at = time.monotonic()
            if term_id in self._names:
                return self._names[term_id]
        level = self.runtime.reader.level(term_id)  # created since the last refresh?
        return level.name if level else None


def request_hash(spec: GrantSpec) -> str:
    return spec.fingerprint()


# The amoCRM hook and the old amoCRM relay (the legacy HMAC sender, one secret for one relay) speak for the
# same account: an amoCRM lead is one deal whichever of them brings it, so switching from the relay to the
# hook never grants twice. Every other credential has keys of its own.
AMOCRM_PRINCIPALS = ("amocrm:path_token", "hmac:legacy")
MAX_KEY_LENGTH = 200   # mls_grants.idempotency_key
#: The prefix of the keys given to requests without any id (``BridgeService.same_request_keys``).
SAME_REQUEST = "same:"


def scoped_key(key: str, principal: str) -> str:
    """The stored idempotency key: the sender's key inside the namespace of the credential that sent it.

    Two credentials that use the same Idempotency-Key or external_id never see or replay each other's
    grant, and none can occupy another's keys in advance. The 0011 migration moved older keys the same way.
    """
    if key.startswith("amocrm:lead:") and principal in AMOCRM_PRINCIPALS:
        return key
    scoped = f"{principal}|{key}"
    if len(scoped) > MAX_KEY_LENGTH:
        scoped = f"{principal}|sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
    return scoped


def amo_hash(lead_id: int, status_id: int | None) -> str:
    return hashlib.sha256(f"amocrm:{lead_id}:{status_id}".encode()).hexdigest()


class BridgeService:
    def __init__(self, runtime: Runtime, catalog: ProductCatalog | None = None) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.catalog = catalog or ProductCatalog(
            runtime.wp_engine, runtime.site,
            [Override(o.term_id, o.duration, o.units, o.product_id) for o in settings.bridge.product_overrides])
        self.levels = _LevelCache(runtime)
        self.writer = IntakeWriter(lambda: runtime.store_engine)

    @property
    def shadow(self) -> bool:
        """Requests from CRMs are only watched, never ordered (bridge.mode = "shadow")."""
        return self.runtime.settings.bridge.mode == "shadow"

    def shadow_meta(self) -> dict[str, Any]:
        """Marks a grant accepted in shadow mode: it stays a shadow grant after a switch to live."""
        return {"shadow": True} if self.shadow else {}

    # --- idempotency keys ---------------------------------------------------------------------
    def idempotency_key(self, parsed: ParsedRequest, context: IntakeContext) -> str | None:
        if context.idempotency_header:
            header = context.idempotency_header.strip()
            if not header or len(header) > 150 or not header.isprintable():
                raise IntakeRejected(400, "invalid_idempotency_key", "Idempotency-Key must be 1-150 printable characters")
            return scoped_key(f"hdr:{header}", str(context.principal))
        if parsed.external_id:
            return scoped_key(f"ext:{parsed.external_id}", str(context.principal))
        if parsed.amo_lead_id:
            return scoped_key(f"amocrm:lead:{parsed.amo_lead_id}", str(context.principal))
        return None

    def same_request_keys(self, spec: GrantSpec, context: IntakeContext, now: datetime) -> tuple[str, str] | None:
        """For a request without any id: its key in the current window and the key it had in the previous one.

        Windows are fixed slices of ``bridge.same_request_window_seconds``; the key of the current slice is
        unique in the store, so two copies arriving together grant once, and a copy in the next slice finds
        the first by the previous slice's key (and its age). ``None`` when the window is off.
        """
        window = self.runtime.settings.bridge.same_request_window_seconds
        if not window:
            return None
        what = f"{spec.email.strip().casefold()}|{spec.term_id}|{spec.duration}|{spec.units}"
        digest = hashlib.sha256(what.encode("utf-8")).hexdigest()[:40]
        slice_ = int(now.timestamp()) // window
        principal = str(context.principal)
        return (scoped_key(f"{SAME_REQUEST}{digest}:{slice_}", principal),
                scoped_key(f"{SAME_REQUEST}{digest}:{slice_ - 1}", principal))

    def amo_idempotency_key(self, lead_id: int, status_id: int | None) -> str:
        if self.runtime.settings.bridge.amocrm.idempotency == "lead_status":
            return f"amocrm:lead:{lead_id}:status:{status_id or 0}"
        return f"amocrm:lead:{lead_id}"

    # --- validation against the site -----------------------------------------------------------
    def check_spec(self, spec: GrantSpec, term_field: str = "term_id") -> tuple[str, int | None, str | None]:
        """(level name, product id, product description); IntakeRejected(422) when the site cannot grant it.

        ``term_field`` names the level field as the sender wrote it (``key.term_id``, ``grant.term_id``)."""
        level_name = self.levels.name(spec.term_id)
        if level_name is None:
            said = Message("grants.unknown_level", {"id": spec.term_id})
            raise IntakeRejected(422, "unknown_level", said.english(), said=said,
                                 errors=[FieldError(term_field, "unknown_level", Message("grants.no_such_level"))])
        if self.runtime.settings.memberlux.order_dialect != "woocommerce":
            return level_name, None, None
        product = self.catalog.find(spec.term_id, spec.duration, spec.units)
        if product is None:
            available = [p.describe() for p in self.catalog.for_level(spec.term_id) if p.status != "trash"]
            wanted = {"level": spec.term_id, "duration": spec.duration, "units": spec.units}
            said = (Message("grants.no_product", {**wanted, "products": ", ".join(available)}) if available
                    else Message("grants.no_products", wanted))
            raise IntakeRejected(422, "no_product", said.english(), said=said, extra={"products": available})
        return level_name, product.product_id, product.describe()

    def validate(self, parsed: ParsedRequest) -> GrantSpec:
        spec, errors = validate_grant(parsed.raw)
        if errors:
            said = Message("grants.invalid_fields")
            raise IntakeRejected(422, "validation_failed", said.english(), errors=errors, said=said)
        assert spec is not None
        return spec

    # --- intake -----------------------------------------------------------------------------------
    def accept(self, parsed: ParsedRequest, context: IntakeContext) -> Acceptance:
        spec = self.validate(parsed)
        key = self.idempotency_key(parsed, context)
        now = self.runtime.clock.now()
        if key is None:
            window = self.same_request_keys(spec, context, now)
            if window is not None:
                key, previous = window
                earlier = self._existing(previous, request_hash(spec), context.channel)
                seconds = self.runtime.settings.bridge.same_request_window_seconds
                if earlier is not None and earlier.grant.created_at >= now - timedelta(seconds=seconds):
                    return earlier
        try:
            level_name, product_id, product_text = self.check_spec(spec, parsed.raw.name_of("term_id"))
        except IntakeRejected:
            # A replay returns the original grant even if its product was unpublished since.
            existing = self._existing(key, request_hash(spec), context.channel) if key else None
            if existing is not None:
                return existing
            raise
        grant = Grant(
            id=new_grant_id(now), idempotency_key=key, request_hash=request_hash(spec), channel=context.channel,
            source_label=parsed.source_label, principal=str(context.principal), external_id=parsed.external_id,
            amo_lead_id=parsed.amo_lead_id, email=spec.email, first_name=spec.first_name or None,
            last_name=spec.last_name or None, patronymic=spec.patronymic or None, phone=spec.phone or None,
            term_id=spec.term_id, duration=spec.duration, units=spec.units, product_id=product_id,
            meta={**parsed.meta, **context.extra_meta, **self.shadow_meta()}, status=SHADOW if self.shadow else QUEUED,
            attempts=0, next_attempt_at=now, source_ip=context.source_ip, created_at=now, updated_at=now,
        )
        steps = [
            ("intake.received", {"format": parsed.format, "channel": context.channel,
                                 "authenticated_as": str(context.principal), "idempotency_key": key}),
            ("intake.validated", {"email": spec.email, "term_id": spec.term_id, "level": level_name,
                                  "duration": spec.duration, "units": spec.units}),
        ]
        if product_id is not None:
            steps.append(("intake.product_chosen", {"product_id": product_id, "product": product_text}))
        if self.shadow:
            steps.append(("shadow.watching", {"window_minutes": self.runtime.settings.bridge.shadow_window_minutes}))
        # The insert comes first and a replay is found by the unique key it collides with: a new deal
        # (the common case) costs one short transaction and no look-up before it.
        return self._insert(grant, steps, context, look_first=False)

    def internal_grant(self, spec: GrantSpec, *, key: str, channel: str, principal: str, external_id: str,
                       meta: dict[str, Any]) -> tuple[Grant, list[tuple[str, dict]]]:
        """A grant made by the sidecar itself (programs), not yet stored: the caller adds it to its own
        transaction, so the decision and the grant are recorded together or not at all.

        Raises :class:`IntakeRejected` when the site cannot grant the level (unknown level, no product).
        """
        level_name, product_id, product_text = self.check_spec(spec)
        now = self.runtime.clock.now()
        grant = Grant(
            id=new_grant_id(now), idempotency_key=key, request_hash=request_hash(spec), channel=channel,
            source_label=channel, principal=principal, external_id=external_id, email=spec.email,
            first_name=spec.first_name or None, last_name=spec.last_name or None, term_id=spec.term_id,
            duration=spec.duration, units=spec.units, product_id=product_id, meta=meta, status=QUEUED, attempts=0,
            next_attempt_at=now, created_at=now, updated_at=now,
        )
        steps = [("intake.received", {"format": "internal", "channel": channel, "authenticated_as": principal,
                                      "idempotency_key": key}),
                 ("intake.validated", {"email": spec.email, "term_id": spec.term_id, "level": level_name,
                                       "duration": spec.duration, "units": spec.units})]
        if product_id is not None:
            steps.append(("intake.product_chosen", {"product_id": product_id, "product": product_text}))
        return grant, steps

    def accept_amo_lead(self, lead_id: int, status_id: int | None, pipeline_id: int | None,
                        context: IntakeContext) -> Acceptance:
        """An amoCRM event whose lead data is still to be read: recorded now, fetched by the worker."""
        now = self.runtime.clock.now()
        grant = Grant(
            id=new_grant_id(now), idempotency_key=self.amo_idempotency_key(lead_id, status_id),
            request_hash=amo_hash(lead_id, status_id if self.runtime.settings.bridge.amocrm.idempotency == "lead_status" else None),
            channel="amocrm", source_label="amocrm", principal=str(context.principal), amo_lead_id=lead_id,
            meta={"amo_status_id": status_id, "amo_pipeline_id": pipeline_id, **context.extra_meta, **self.shadow_meta()},
            status=FETCHING, attempts=0, next_attempt_at=now, source_ip=context.source_ip,
            created_at=now, updated_at=now,
        )
        steps = [("intake.received", {"format": "amocrm", "channel": "amocrm", "authenticated_as": str(context.principal),
                                      "lead_id": lead_id, "status_id": status_id, "pipeline_id": pipeline_id})]
        return self._insert(grant, steps, context)

    def _insert(self, grant: Grant, steps: list[tuple[str, dict]], context: IntakeContext, *,
                look_first: bool = True) -> Acceptance:
        if grant.idempotency_key and look_first:
            existing = self._existing(grant.idempotency_key, grant.request_hash, grant.channel)
            if existing is not None:
                return existing
        # One transaction: the grant (the outbox entry), its audit events and its webhook event, shared
        # with the requests that arrive meanwhile (intake_writer). Plain INSERTs rather than the ORM's
        # unit of work, which costs more than the writes themselves; everything is prepared before.
        values = row_values(grant)
        events = [audit.row(subject_type="grant", subject_id=grant.id, action=action, at=grant.created_at,
                            actor=str(context.principal), source_ip=context.source_ip, **details)
                  for action, details in steps]
        try:
            self.writer.write(PendingGrant(values, events, accepted_event(grant)))
        except KeyTaken:
            # Stored already, or a concurrent request with the same key won the unique constraint.
            existing = self._existing(grant.idempotency_key or "", grant.request_hash, grant.channel)
            if existing is None:
                raise
            return existing
        return Acceptance(grant, replayed=False)

    def _existing(self, key: str, fingerprint: str, channel: str) -> Acceptance | None:
        with self.runtime.sessions() as session:
            found = session.scalar(sa.select(Grant).where(Grant.idempotency_key == key))
        if found is None:
            return None
        # An amoCRM lead is one deal whichever way it arrives (the old relay's signed request or the
        # webhook itself): across those channels a match is the same grant although the payloads differ.
        crossed_channels = key.startswith("amocrm:lead:") and found.channel != channel
        # A repeat found by its content (no id) is the same request by definition, names and phone aside.
        same_request = f"|{SAME_REQUEST}" in key
        if found.request_hash != fingerprint and not crossed_channels and not same_request:
            raise IntakeRejected(409, "idempotency_conflict",
                                 f"idempotency key already used by grant {found.id} with a different payload",
                                 extra={"grant_id": found.id})
        return Acceptance(found, replayed=True)

    # --- lookups and admin actions -----------------------------------------------------------------
    def get(self, ref: str, *, owner: str | None = None) -> Grant | None:
        """The grant with id or external_id ``ref``; with ``owner``, only one that credential created."""
        with self.runtime.sessions() as session:
            grant = session.get(Grant, ref)
            if grant is not None and owner is not None and grant.principal != owner:
                grant = None
            if grant is None:
                query = sa.select(Grant).where(Grant.external_id == ref)
                if owner is not None:
                    query = query.where(Grant.principal == owner)
                grant = session.scalar(query.order_by(Grant.created_at.desc()))
            return grant

    def retry(self, grant_id: str, actor: str) -> Grant:
        """A failed grant goes back to the queue.

        If it was ever ordered, the worker first looks for a key carrying the grant's id (and
        confirms instead of ordering). Traces of the earlier calls other than that id (an order
        without a key, a key of the user and level) no longer hold it back: the admin who retries
        has seen them in the grant's history and asks for a new order.
        """
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            grant = session.get(Grant, grant_id, with_for_update=True)
            if grant is None:
                raise IntakeRejected(404, "not_found", f"no grant {grant_id}")
            if grant.status not in (FAILED, CANCELLED):
                raise IntakeRejected(409, "not_retryable",
                                     f"grant {grant_id} is {grant.status}; only failed or cancelled grants can be retried")
            grant.status = FETCHING if grant.term_id is None else QUEUED
            grant.next_attempt_at, grant.updated_at, grant.completed_at = now, now, None
            grant.first_ordered_at, grant.settle_until, grant.verify_until = None, None, None
            kept = {k: v for k, v in (grant.meta or {}).items() if k not in ("order_answered", "reorders_without_key")}
            grant.meta = {**kept, "retried_at": now.isoformat()}
            audit.record(session, subject_type="grant", subject_id=grant.id, action="admin.retry", at=now, actor=actor)
            return grant

    def cancel(self, grant_id: str, actor: str) -> Grant:
        now = self.runtime.clock.now()
        cancelled = Message("grants.cancelled", {"actor": actor})
        with unit_of_work(self.runtime.sessions) as session:
            updated = session.execute(
                sa.update(Grant).where(Grant.id == grant_id, Grant.status.in_((QUEUED, FETCHING, FAILED)))
                .values(status=CANCELLED, updated_at=now, completed_at=now, last_error=cancelled.english())
            ).rowcount
            grant = session.get(Grant, grant_id)
            if grant is not None and updated:
                grant.meta = error_values(grant.meta, cancelled)["meta"]
            if grant is None:
                raise IntakeRejected(404, "not_found", f"no grant {grant_id}")
            if not updated:
                raise IntakeRejected(409, "not_cancellable",
                                     f"grant {grant_id} is {grant.status}; only queued, fetching or failed grants can be cancelled "
                                     "(one being delivered may already exist on the site)")
            audit.record(session, subject_type="grant", subject_id=grant.id, action="admin.cancel", at=now, actor=actor)
            return grant


def row_values(grant: Grant) -> dict[str, Any]:
    """Every column of a new, unsaved grant, with the model's defaults filled in on the object too, so the
    answer built from it reads as it would after an ORM flush."""
    values: dict[str, Any] = {}
    for column in Grant.__table__.columns:
        value = getattr(grant, column.key)
        if value is None and column.default is not None:
            default = column.default
            value = default.arg(None) if default.is_callable else default.arg  # type: ignore[union-attr]
            setattr(grant, column.key, value)
        values[column.key] = value
    return values


def accepted_event(grant: Grant) -> tuple[str, dict[str, Any]] | None:
    """The type and data of ``grant.accepted`` for ``grant``; None while it does not say what it grants
    (an amoCRM lead not read yet)."""
    if grant.term_id is None:
        return None
    return "grant.accepted", {"grant_id": grant.id, "channel": grant.channel, "external_id": grant.external_id,
                              "email": grant.email or "", "term_id": grant.term_id, "duration": grant.duration,
                              "units": grant.units}


def emit_accepted(session: Session | Connection, grant: Grant) -> None:
    """``grant.accepted`` in the transaction that stores the grant (amoCRM grants: once their lead is read)."""
    event = accepted_event(grant)
    if event is not None:
        emit(session, *event, grant.created_at)


def is_final(grant: Grant) -> bool:
    return grant.status in FINAL_STATES


__all__ = ["Acceptance", "BridgeService", "IntakeContext", "IntakeRejected", "OPEN_STATES", "is_final", "new_grant_id"]
