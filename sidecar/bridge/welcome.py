"""The welcome e-mail for learners whose account an order created.

MemberLux's order endpoint creates such users with a random password and sends them nothing
(core.md 5.3). The letter is sent at most once per grant: the grant is marked before sending, so a
crash between the SMTP transaction and the mark never produces a second letter (a lost letter is
visible in the audit trail and can be resent by hand; a duplicate password letter cannot be unsent).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import urljoin

import sqlalchemy as sa

from sidecar.bootstrap import Runtime
from sidecar.logs import mask_emails
from sidecar.mail.mailer import Mail, MailError, Mailer
from sidecar.mail.templates import TemplateError, html_to_text, render_html, render_text
from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import Grant

log = logging.getLogger(__name__)


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


def send_welcome(runtime: Runtime, grant: Grant, mailer: Mailer | None = None) -> str | None:
    """Send the letter if this grant created the user; returns the Message-ID, or None when not sent."""
    settings = runtime.settings.bridge.welcome_email
    if not settings.enabled or grant.user_existed is not False or not grant.email:
        return None
    mailer = mailer or Mailer(runtime.settings.smtp)
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        current = session.get(Grant, grant.id)
        if current is None or (current.meta or {}).get("welcome"):
            return None
        current.meta = {**(current.meta or {}), "welcome": "sending"}
    outcome: dict[str, str] = {}
    try:
        variables = welcome_variables(runtime, grant)
        body = render_html(settings.body_html, variables)
        mail = Mail(to=grant.email, subject=render_text(settings.subject, variables).strip(), html=body,
                    text=html_to_text(body))
        outcome = {"welcome": "sent", "welcome_message_id": mailer.send(mail)}
    except (MailError, TemplateError) as exc:
        outcome = {"welcome": "failed", "welcome_error": str(exc)[:300]}
        log.warning("welcome e-mail for grant %s not sent: %s", grant.id, mask_emails(str(exc)))
    with unit_of_work(runtime.sessions) as session:
        session.execute(sa.update(Grant).where(Grant.id == grant.id).values(
            meta={**((session.get(Grant, grant.id).meta) or {}), **outcome}))
        audit.record(session, subject_type="grant", subject_id=grant.id, action=f"welcome.{outcome['welcome']}",
                     at=now, actor="mailer", message_id=outcome.get("welcome_message_id"),
                     error=outcome.get("welcome_error"))
    return outcome.get("welcome_message_id")
