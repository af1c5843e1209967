"""The welcome e-mail for learners whose account an order created: an outbox of its own.

MemberLux's order endpoint creates such users with a random password and sends them nothing
(core.md 5.3). The letter carries the password-reset link, so it goes out **at most once** per grant
unless an administrator asks for it again; a letter lost to a failure is retried or shown, never
silently dropped.

1. *Queue.* When a grant succeeds for a user it created, a ``mls_welcome_emails`` row (``pending``) is
   committed before any attempt to send it; ``grant_id`` is unique, so a grant has one letter
   whatever runs. The worker's job also queues the letter of a grant that succeeded within
   :data:`SWEEP_WINDOW` and has none (the store failed right after the success, or the process
   stopped there).
2. *Claim* with a conditional UPDATE: pending → sending, a ``claimed_by`` naming this claim alone,
   a lease of :data:`LEASE`.
3. *Mark, then send.* Right before the DATA phase ``data_started_at`` is committed — only while the
   claim is ours; otherwise nothing is sent.
4. *Record*, conditioned on the claim: ``sent``; ``failed`` (5xx, template error, or transient
   failures up to ``max_attempts``); ``unknown`` (the connection was lost after the whole message was
   sent); or ``pending`` again after a doubling delay (server down, 4xx).
5. A claim whose lease ran out goes back to ``pending`` without the mark and to ``unknown`` with it.

``unknown`` is never sent again automatically: an administrator marks it delivered or sends it again
(grant page, ``mlsidecar grants welcome``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urljoin

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from sidecar.bootstrap import Runtime
from sidecar.mail.claimed import LEASE, ClaimedMailSender, SendCounts
from sidecar.mail.mailer import Mail, Mailer
from sidecar.mail.templates import html_to_text, render_html, render_text
from sidecar.store import audit
from sidecar.store.grant_models import SUCCEEDED, Grant
from sidecar.store.mail_models import FAILED, PENDING, SENDING, SENT, UNKNOWN, WelcomeEmail
from sidecar.store.db import unit_of_work

log = logging.getLogger(__name__)

SWEEP_WINDOW = timedelta(days=3)       # succeeded grants looked at for a letter that was never queued
_SWEEP_CREATED = timedelta(days=30)    # bound on created_at, so the sweep walks an index


def welcome_variables(runtime: Runtime, grant: Grant) -> dict[str, str]:
    reader = runtime.reader
    user = reader.user(grant.user_id) if grant.user_id else None
    level = reader.level(grant.term_id) if grant.term_id else None
    home = (reader.option("home") or reader.option("siteurl") or "").rstrip("/")
    last_day = grant.date_end - timedelta(days=1) if grant.date_end and not grant.is_unlimited else None
    return {
        "first_name": grant.first_name or (user.first_name if user else "") or "",
        "last_name": grant.last_name or (user.last_name if user else "") or "",
        "email": grant.email or "",
        "login": user.login if user else (grant.email or ""),
        "level_name": level.name if level else str(grant.term_id),
        "access_until": last_day.strftime("%d.%m.%Y") if last_day else "",
        "site_url": home + "/" if home else "",
        "reset_url": urljoin(home + "/", "wp-login.php?action=lostpassword") if home else "",
    }


def wants_letter(runtime: Runtime, grant: Grant) -> bool:
    """The letter is on, the grant succeeded, its order created the user, and there is an address."""
    return (runtime.settings.bridge.welcome_email.enabled and grant.status == SUCCEEDED
            and grant.user_existed is False and bool(grant.email))


def enqueue(runtime: Runtime, grant: Grant, *, actor: str = "mailer") -> int | None:
    """Queue the grant's letter (committed before any attempt); returns its row id, None when the grant
    needs none. A grant that already has its row keeps it."""
    if not wants_letter(runtime, grant):
        return None
    now = runtime.clock.now()
    try:
        with unit_of_work(runtime.sessions) as session:
            row = WelcomeEmail(grant_id=grant.id, to_address=(grant.email or "")[:200], state=PENDING, reason="",
                               attempts=0, next_attempt_at=now, created_at=now, updated_at=now, last_error="")
            session.add(row)
            session.flush()
            audit.record(session, subject_type="grant", subject_id=grant.id, action="welcome.queued", at=now,
                         actor=actor)
            return row.id
    except IntegrityError:
        with runtime.sessions() as session:
            return session.scalar(sa.select(WelcomeEmail.id).where(WelcomeEmail.grant_id == grant.id))


def send_welcome(runtime: Runtime, grant: Grant, mailer: Mailer | None = None) -> str | None:
    """At the grant's success: queue its letter and try to send it at once; returns the Message-ID when
    it went out now. Never raises: whatever is not done here, the worker's job does (see the module doc)."""
    try:
        row_id = enqueue(runtime, grant)
        if row_id is None:
            return None
        return WelcomeSender(runtime, mailer).deliver(row_id)
    except Exception:  # the grant has succeeded; its letter is the job's to finish
        log.exception("welcome e-mail for grant %s not sent now; the worker's job will see to it", grant.id)
        return None


@dataclass
class WelcomeReport(SendCounts):
    queued: int = 0          # letters the sweep queued (never queued at the grant's success)

    def summary(self) -> str:
        text = (f"welcome e-mails: sent {self.sent}, retrying {self.retrying}, failed {self.failed}, "
                f"outcome unknown {self.unknown}")
        if self.queued or self.recovered:
            text += f"; queued late {self.queued}, recovered {self.recovered}"
        return text + (f"; stopped: {self.stopped}" if self.stopped else "")


class WelcomeSender(ClaimedMailSender):
    model = WelcomeEmail
    waiting = PENDING
    actor = "mailer"
    action = "welcome"
    requeued_error = "the sender stopped before handing the letter to the mail server; queued again"
    interrupted_warning = "%d welcome e-mail deliveries were interrupted earlier: queued again or marked unknown"
    lease = LEASE
    log = logging.getLogger(__name__)

    def __init__(self, runtime: Runtime, mailer: Mailer | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.bridge.welcome_email
        self.mailer = mailer or Mailer(runtime.settings.smtp)
        self.report = WelcomeReport()

    # --- the worker's job ----------------------------------------------------------------------------

    def run(self, limit: int = 100) -> WelcomeReport:
        self.recover_interrupted()
        self.sweep()
        now = self.runtime.clock.now()
        with self.runtime.sessions() as session:
            due = list(session.scalars(
                sa.select(WelcomeEmail.id).where(WelcomeEmail.state == PENDING, WelcomeEmail.next_attempt_at <= now)
                .order_by(WelcomeEmail.next_attempt_at, WelcomeEmail.id).limit(limit)))
        for row_id in due:
            self.deliver(row_id)
            if self.report.stopped:
                break
        return self.report

    def sweep(self) -> int:
        """Queue the letter of every recently succeeded grant that should have one and has none."""
        if not self.settings.enabled:
            return 0
        now = self.runtime.clock.now()
        has_row = sa.select(WelcomeEmail.id).where(WelcomeEmail.grant_id == Grant.id).exists()
        with self.runtime.sessions() as session:
            missing = list(session.scalars(sa.select(Grant).where(
                Grant.status == SUCCEEDED, Grant.created_at >= now - _SWEEP_CREATED,
                Grant.completed_at >= now - SWEEP_WINDOW, Grant.user_existed.is_(False), Grant.email.is_not(None),
                ~has_row)))
        queued = 0
        for grant in missing:
            if (grant.meta or {}).get("welcome"):
                continue  # handled by an earlier version of the sidecar (and carried over by migration 0009)
            if enqueue(self.runtime, grant) is not None:
                queued += 1
                log.warning("grant %s succeeded without a queued welcome e-mail; queued now", grant.id)
        self.report.queued += queued
        return queued

    # --- one letter ------------------------------------------------------------------------------------

    def deliver(self, row_id: int) -> str | None:
        """Claim, render, mark, send, record one letter; returns the Message-ID when it was sent."""
        holder = self._claim(row_id)
        if holder is None:
            self.report.lost_claims += 1
            return None
        with self.runtime.sessions() as session:
            row = session.get(WelcomeEmail, row_id)
            grant = session.get(Grant, row.grant_id)
            session.expunge_all()
        if row.claimed_by != holder:
            self.report.lost_claims += 1
            return None
        return row.message_id if self._send(row, lambda: self._letter(grant, row)) else None

    def _letter(self, grant: Grant, row: WelcomeEmail) -> Mail:
        variables = welcome_variables(self.runtime, grant)
        body = render_html(self.settings.body_html, variables)
        return Mail(to=row.to_address, subject=render_text(self.settings.subject, variables).strip(), html=body,
                    text=html_to_text(body), message_id=row.message_id)

    def _subject(self, row: WelcomeEmail) -> tuple[str, str]:
        return "grant", row.grant_id

    def _label(self, row: WelcomeEmail) -> str:
        return f"welcome e-mail of grant {row.grant_id}"

    def _max_attempts(self) -> int:
        return self.settings.max_attempts

    def _retry_delay(self, row: WelcomeEmail) -> timedelta:
        return timedelta(seconds=min(self.settings.retry_base_seconds * 2 ** (row.attempts - 1),
                                     self.settings.retry_max_seconds))


def welcome_job(runtime: Runtime) -> str:
    """The worker's job: recover stale claims, queue missed letters, send what is due."""
    if not runtime.settings.bridge.welcome_email.enabled:
        # Letters already queued still go out (or are recovered) when the letter was switched off since.
        with runtime.sessions() as session:
            if session.scalar(sa.select(WelcomeEmail.id).where(WelcomeEmail.state.in_((PENDING, SENDING))).limit(1)) is None:
                return "welcome e-mail off"
    return WelcomeSender(runtime).run().summary()


# --- what an administrator does ------------------------------------------------------------------------

class WelcomeRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def welcome_of(session: sa.orm.Session, grant_id: str) -> WelcomeEmail | None:
    return session.scalar(sa.select(WelcomeEmail).where(WelcomeEmail.grant_id == grant_id))


def can_resend(grant: Grant, row: WelcomeEmail | None) -> bool:
    return grant.status == SUCCEEDED and bool(grant.email) and (row is None or row.state in (SENT, FAILED, UNKNOWN))


def resend_welcome(runtime: Runtime, grant_id: str, *, actor: str) -> WelcomeEmail:
    """Queue the grant's letter again on an administrator's request (also one never sent, or a letter to a
    user that existed); the worker sends it within a minute. Audited with the administrator's name."""
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        grant = session.get(Grant, grant_id)
        if grant is None:
            raise WelcomeRefused("not_found", f"no grant with id '{grant_id}'")
        row = welcome_of(session, grant_id)
        if not can_resend(grant, row):
            if grant.status != SUCCEEDED or not grant.email:
                raise WelcomeRefused("not_succeeded", f"grant {grant_id} is {grant.status}"
                                     f"{'' if grant.email else ' and has no e-mail address'}: there is no letter to send")
            raise WelcomeRefused("in_progress", f"the welcome e-mail of grant {grant_id} is {row.state} already")
        previous = (row.state, row.message_id) if row is not None else (None, None)
        if row is None:
            row = WelcomeEmail(grant_id=grant_id, to_address=(grant.email or "")[:200], attempts=0, created_at=now)
            session.add(row)
        row.to_address = (grant.email or "")[:200]
        row.state, row.reason, row.attempts, row.next_attempt_at = PENDING, "", 0, now
        row.claimed_by = row.claimed_until = row.data_started_at = None
        row.last_error, row.updated_at = "", now
        audit.record(session, subject_type="grant", subject_id=grant_id, action="welcome.resend", at=now, actor=actor,
                     previous_state=previous[0], previous_message_id=previous[1])
    with runtime.sessions() as session:
        return welcome_of(session, grant_id)


def mark_welcome_delivered(runtime: Runtime, grant_id: str, *, actor: str) -> WelcomeEmail:
    """An administrator found the unknown letter in the mail server's log: it is ``sent``."""
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        row = welcome_of(session, grant_id)
        if row is None or row.state != UNKNOWN:
            raise WelcomeRefused("not_unknown", f"the welcome e-mail of grant {grant_id} is "
                                                f"{row.state if row else 'not queued'}, not unknown")
        row.state, row.reason, row.sent_at, row.updated_at = SENT, "marked_delivered", row.data_started_at or now, now
        audit.record(session, subject_type="grant", subject_id=grant_id, action="welcome.marked_delivered", at=now,
                     actor=actor, message_id=row.message_id)
    with runtime.sessions() as session:
        return welcome_of(session, grant_id)
