"""Delivering events from the outbox: signed, retried on a published schedule, logged per attempt.

**At least once.** A delivery is claimed with a conditional update and a lease; a worker that dies
mid-request leaves the claim to expire and the delivery is tried again. Receivers drop repeats by
the ``webhook-id`` header (the event id), as Standard Webhooks prescribes.

**E-mail endpoints are the exception**: a mailbox drops no repeats, so an e-mail whose outcome is
unknown is never sent again automatically. ``data_started_at`` is committed right before the DATA
phase; a claim that expired after it, or a connection lost after the whole message was sent
(``MailOutcomeUnknown``), ends the delivery ``failed`` with "outcome unknown" in its error, to be
redelivered by hand after a look at the mail server's log. Transient failures before that point are
retried on the schedule below.

Retry schedule (:data:`RETRY_SCHEDULE`, after the first attempt): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
10 h — eight attempts over about 27.5 hours; then the delivery is ``failed``. 2xx is success;
anything else (including 3xx: redirects are never followed) is a failed attempt. After
``webhooks.disable_after_failures`` deliveries in a row failed for good, the endpoint is switched
off with the reason shown in the UI.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from sidecar.bootstrap import Runtime
from sidecar.logs import mask_emails
from sidecar.mail.mailer import MailError, Mailer, MailOutcomeUnknown
from sidecar.store import audit
from sidecar.store.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from sidecar.webhooks.events import TEST_EVENT
from sidecar.webhooks.formats import FORMATTERS, load_providers
from sidecar.webhooks.ssrf import DestinationRefused, Resolver, pinned_session, system_resolver
from sidecar.store.db import run_transaction, unit_of_work

log = logging.getLogger(__name__)

RETRY_SCHEDULE = (timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
                  timedelta(hours=5), timedelta(hours=10), timedelta(hours=10))
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
LEASE = timedelta(minutes=2)
UNKNOWN_EMAIL = ("outcome unknown: the mail server may have delivered this e-mail; it is not sent again "
                 "automatically — look for it in the mail server's log before redelivering")
USER_AGENT = "mlsidecar-webhooks/1"


def without_url_path(text: str, url: str) -> str:
    """``text`` with the endpoint URL's path and query replaced by ``…``: some receivers take a token
    there (a Telegram bot's is in the path), and connection errors quote the URL."""
    parts = urlsplit(url)
    for secret in sorted({parts.path if len(parts.path) > 1 else "", parts.query}, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "…")
    return text


def signature_headers(endpoint: WebhookEndpoint, event_id: str, payload: bytes, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers; during a rotation both secrets sign (space-separated signatures)."""
    secrets_ = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
        secrets_.append(endpoint.previous_secret)
    signatures = [Webhook(s).sign(event_id, now, payload.decode("utf-8")) for s in secrets_ if s]
    return {"webhook-id": event_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": " ".join(signatures)}


class WebhookDeliverer:
    def __init__(self, runtime: Runtime, *, resolver: Resolver = system_resolver,
                 mailer: Mailer | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.webhooks
        self.resolver = resolver
        self.mailer = mailer or Mailer(runtime.settings.smtp)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        load_providers()

    def run_once(self, limit: int = 50) -> int:
        """Deliver what is due; returns the number of attempts made."""
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            stale = (WebhookDelivery.state == "delivering", WebhookDelivery.claimed_until < now)
            # An e-mail that may have reached the mail server: final, never repeated by itself.
            session.execute(sa.update(WebhookDelivery).where(*stale, WebhookDelivery.data_started_at.is_not(None))
                            .values(state="failed", claimed_until=None, updated_at=now, completed_at=now,
                                    next_attempt_at=None, last_error=UNKNOWN_EMAIL)
                            .execution_options(synchronize_session=False))
            # Claims whose worker died before anything may have gone out: due again (at least once).
            session.execute(sa.update(WebhookDelivery).where(*stale)
                            .values(state="pending", claimed_until=None, updated_at=now).execution_options(synchronize_session=False))
        with self.runtime.sessions() as session:
            # Deliveries of a switched-off endpoint wait (they resume when it is switched on again);
            # a test event is sent whatever the switch says.
            due = list(session.scalars(
                sa.select(WebhookDelivery.id)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now,
                       sa.or_(WebhookEndpoint.enabled.is_(True), WebhookEvent.type == TEST_EVENT))
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)))
        attempts = 0
        for delivery_id in due:
            if self._claim(delivery_id):
                self.attempt(delivery_id)
                attempts += 1
        return attempts

    def _claim(self, delivery_id: int) -> bool:
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            return session.execute(sa.update(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending")
                .values(state="delivering", claimed_until=now + LEASE, data_started_at=None, updated_at=now)
                .execution_options(synchronize_session=False)).rowcount == 1

    def attempt(self, delivery_id: int) -> WebhookAttempt:
        """One try of a claimed delivery, recorded whatever happens."""
        with self.runtime.sessions() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
            event = session.get(WebhookEvent, delivery.event_id)
            session.expunge_all()
        started = time.monotonic()
        status, excerpt, error, final = None, "", "", False
        try:
            rendered = FORMATTERS[endpoint.body_format](self.runtime, endpoint, event)
            if endpoint.kind == "email":
                assert rendered.mail is not None
                self.mailer.send(rendered.mail, before_data=lambda: self._handing_over(delivery_id))
                status = 250
            else:
                status, excerpt = self._post(endpoint, event, rendered.payload)
                if not 200 <= status < 300:
                    error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except DestinationRefused as exc:
            error = f"destination refused: {exc}"
        except requests.Timeout:
            error = f"no answer within {self.settings.timeout_seconds:g} s"
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        except MailOutcomeUnknown as exc:
            error, final = f"e-mail: {exc}; {UNKNOWN_EMAIL} (Message-ID {exc.message_id})", True
        except MailError as exc:
            error = f"e-mail: {exc}"
        except Exception as exc:  # a formatter bug must not wedge the outbox
            log.exception("webhook delivery %s could not be prepared", delivery_id)
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        duration = int((time.monotonic() - started) * 1000)
        return self._record(delivery, endpoint, status if not error or status else None, duration, excerpt,
                            mask_emails(without_url_path(error, endpoint.url)), final=final)

    def _handing_over(self, delivery_id: int) -> None:
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            session.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                             WebhookDelivery.state == "delivering")
                            .values(data_started_at=now, claimed_until=now + LEASE, updated_at=now)
                            .execution_options(synchronize_session=False))

    def _post(self, endpoint: WebhookEndpoint, event: WebhookEvent, payload: bytes) -> tuple[int, str]:
        # Resolved and checked once; the connection goes to the checked address (DNS rebinding).
        http = pinned_session(endpoint.url, self.settings.allow_private_destinations, self.resolver)
        now = self.runtime.clock.now()
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT,
                   **signature_headers(endpoint, event.id, payload, now)}
        with http:
            return self._send(http, endpoint.url, payload, headers)

    def _send(self, http: requests.Session, url: str, payload: bytes, headers: dict[str, str]) -> tuple[int, str]:
        answer = http.post(url, data=payload, headers=headers, timeout=self.settings.timeout_seconds,
                           allow_redirects=False, stream=True)
        try:
            head = answer.raw.read(1000, decode_content=True) if answer.raw is not None else b""
        except Exception:  # noqa: BLE001 - the excerpt is a courtesy
            head = b""
        finally:
            answer.close()
        return answer.status_code, head.decode("utf-8", "replace")

    def _record(self, delivery: WebhookDelivery, endpoint: WebhookEndpoint, status: int | None, duration: int,
                excerpt: str, error: str, *, final: bool = False) -> WebhookAttempt:
        now = self.runtime.clock.now()
        attempts = delivery.attempts + 1
        success = not error

        def recorded(session: Any) -> WebhookAttempt:
            attempt = WebhookAttempt(delivery_id=delivery.id, at=now, status_code=status, duration_ms=duration,
                                     response_excerpt=excerpt[:1000], error=error[:500])
            session.add(attempt)
            values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error[:500],
                                      "claimed_until": None, "updated_at": now}
            if success:
                values.update(state="succeeded", completed_at=now, next_attempt_at=None)
            elif attempts >= MAX_ATTEMPTS or final:
                values.update(state="failed", completed_at=now, next_attempt_at=None)
            else:
                values.update(state="pending", next_attempt_at=now + RETRY_SCHEDULE[attempts - 1])
            session.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values)
                            .execution_options(synchronize_session=False))
            if success or (values["state"] == "failed" and not final):  # an unknown outcome is no endpoint failure
                self._endpoint_health(session, endpoint.id, success, error, now)
            return attempt

        # Run again if the store rolled it back for contention: left unrecorded, a delivery the receiver
        # already took would be sent once more when its lease expires.
        attempt = run_transaction(self.runtime.sessions, recorded, f"the record of webhook delivery {delivery.id}")
        if error:
            log.info("webhook %s to %s: attempt %d failed: %s", delivery.event_id, endpoint.name, attempts, error)
        return attempt

    def _endpoint_health(self, session: Any, endpoint_id: int, success: bool, error: str, now: datetime) -> None:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        if success:
            endpoint.consecutive_failures = 0
            return
        endpoint.consecutive_failures += 1
        limit = self.settings.disable_after_failures
        if endpoint.enabled and endpoint.consecutive_failures >= limit:
            endpoint.enabled = False
            endpoint.disabled_reason = (f"switched off {now:%Y-%m-%d %H:%M} UTC after {limit} deliveries in a row "
                                        f"failed; last error: {error}")[:300]
            endpoint.updated_at = now
            audit.record(session, subject_type="webhook_endpoint", subject_id=str(endpoint_id),
                         action="webhook.endpoint_disabled", at=now, actor="webhooks", error=error[:200])
            log.warning("webhook endpoint %s disabled: %s", endpoint.name, endpoint.disabled_reason)


def redeliver(runtime: Runtime, delivery_id: int, actor: str) -> bool:
    """Queue a delivery again now (after a fix on the receiver's side), whatever its state."""
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.state == "delivering":
            return False
        delivery.state, delivery.next_attempt_at, delivery.completed_at, delivery.updated_at = "pending", now, None, now
        audit.record(session, subject_type="webhook_delivery", subject_id=str(delivery_id), action="webhook.redeliver",
                     at=now, actor=actor, event_id=delivery.event_id)
    return True


def deliver_job(runtime: Runtime) -> str:
    made = WebhookDeliverer(runtime).run_once(limit=200)
    return f"{made} webhook attempt(s)"
