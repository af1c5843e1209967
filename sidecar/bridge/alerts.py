"""Alerts: an administrator hears of every grant that failed or whose outcome stays unknown past its
settle time (:mod:`sidecar.bridge.attention` defines both), once, in a digest at most every
``alerts.digest_interval_minutes``.

1. *Detect* (the worker's ``bridge.alerts`` job, every minute). Each grant that is an alert now and has
   no row for its current episode gets one in ``mls_grant_alerts`` (``pending``); the row's unique
   (grant, kind, since) makes this once per episode whatever runs the job. An unsettled grant's row is
   committed with a ``grant.unsettled`` event in the same transaction (a failure already has its
   ``grant.failed`` from the moment it failed). Detection runs whether or not mail can go out.
2. *Plan a digest* when alerts are pending and no digest was made in the last interval: the pending
   alerts whose grant is still in the same episode move into a new ``mls_alert_digests`` row; the
   others are ``resolved`` (the grant succeeded, was retried or cancelled meanwhile) and left out.
3. *Send* it like the reminders send theirs: claim (conditional UPDATE, a per-claim holder), check the
   alerts again (a grant resolved since is left out; nothing left → ``skipped``), commit the pre-DATA
   mark, send, record under the claim. ``sent``: each alert was mailed. ``unknown`` (the connection
   was lost after the whole message, or the sender stopped after handing it over): the digest is never
   sent again, so no alert is ever mailed twice. A transient failure retries the same digest after
   1, 2, 4 … minutes (at most the interval) for :data:`MAX_ATTEMPTS` sends; a digest that fails for
   good (5xx, or out of attempts) gives its alerts back to ``pending``: they go with the next digest,
   which the interval still keeps at most one per interval.

Without ``alerts.enabled``, without e-mail (``smtp.host`` and ``smtp.pickup_dir`` empty) or without a
recipient, nothing is planned or sent: alerts wait ``pending`` (the first page and ``doctor`` show the
counts, ``doctor`` says why no mail goes out) and the next digest after the cause is fixed carries
those still unresolved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from markupsafe import Markup, escape
from sqlalchemy.exc import IntegrityError

from sidecar.bootstrap import Runtime
from sidecar.config import Settings
from sidecar.mail.claimed import LEASE, ClaimedMailSender, SendCounts
from sidecar.mail.mailer import Mail, Mailer
from sidecar.store import audit
from sidecar.store.alert_models import (
    DIGESTED, FAILED, FAILED_KIND, KINDS, PENDING, PLANNED, RESOLVED, SENDING, SENT, SKIPPED, UNKNOWN, UNSETTLED_KIND,
    AlertDigest, GrantAlert,
)
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import Grant
from sidecar.webhooks.events import emit

from . import attention

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
RETRY_BASE = timedelta(minutes=1)
DETECT_LIMIT = 500                  # per kind and run; the rest is found by the next run
MAX_PER_DIGEST = 500                # alerts in one letter; the rest go with the next digest


# --- who gets it, in which language ---------------------------------------------------------------------

@dataclass(frozen=True)
class Recipient:
    address: str        # "" when there is none
    source: str         # "alerts.to" or "reminders"
    problem: str = ""   # why there is none


def recipient(settings: Settings, reader: Any, sessions: Any) -> Recipient:
    """``alerts.to``, else the reminders' administrator address when the monitored levels name exactly one."""
    if settings.alerts.to:
        return Recipient(settings.alerts.to, "alerts.to")
    from sidecar.monitor.settings import reminder_admin_addresses

    found = reminder_admin_addresses(reader, sessions)
    if len(found) == 1:
        return Recipient(found[0], "reminders")
    if not found:
        return Recipient("", "", "alerts.to is empty and no level with monitoring on names an administrator address "
                                 "for its reminders' digest")
    return Recipient("", "", f"alerts.to is empty and the levels name {len(found)} different administrator addresses "
                             f"({', '.join(found[:5])}{' …' if len(found) > 5 else ''}): not guessed")


def digest_language(settings: Settings) -> str:
    """``alerts.language``, else ``reminders.language`` when the configuration sets it, else English."""
    if settings.alerts.language:
        return settings.alerts.language
    if "language" in settings.reminders.model_fields_set:
        return settings.reminders.language
    return "en"


# --- 1. detection ------------------------------------------------------------------------------------

def _event(grant: Grant, since: datetime) -> dict[str, Any]:
    return {"grant_id": grant.id, "channel": grant.channel, "external_id": grant.external_id,
            "email": grant.email or "", "term_id": grant.term_id, "status": grant.status,
            "orders_sent": grant.orders_sent, "since": since.isoformat().replace("+00:00", "Z"),
            "error": grant.last_error or ""}


def detect(runtime: Runtime, *, limit: int = DETECT_LIMIT) -> int:
    """Record every new alert (and its ``grant.unsettled`` event); returns how many were recorded."""
    now = runtime.clock.now()
    rule = attention.Unsettled.of(runtime.settings, now)
    recorded = 0
    for kind in KINDS:
        since = attention.since_expression(kind)
        known = sa.select(GrantAlert.id).where(GrantAlert.grant_id == Grant.id, GrantAlert.kind == kind,
                                               GrantAlert.since == since).exists()
        with runtime.sessions() as session:
            found = session.execute(sa.select(Grant, since.label("since"))
                                    .where(attention.clause(kind, rule), ~known)
                                    .order_by(since, Grant.id).limit(limit)).all()
            session.expunge_all()
        for grant, began in found:
            recorded += _record(runtime, grant, kind, began, now)
    return recorded


def _record(runtime: Runtime, grant: Grant, kind: str, since: datetime, now: datetime) -> int:
    try:
        with unit_of_work(runtime.sessions) as session:
            session.add(GrantAlert(grant_id=grant.id, kind=kind, since=since, detected_at=now, state=PENDING,
                                   updated_at=now))
            session.flush()   # the unique episode decides here, before anything else is written
            audit.record(session, subject_type="grant", subject_id=grant.id, action=f"alert.{kind}", at=now,
                         actor="alerts", since=since.isoformat(), status=grant.status)
            if kind == UNSETTLED_KIND:
                emit(session, "grant.unsettled", _event(grant, since), now)
    except IntegrityError:
        return 0          # another process recorded this episode first
    if kind == UNSETTLED_KIND:
        log.warning("grant %s: outcome still unknown (%s) past its settle time %s", grant.id, grant.status,
                    f"{since:%Y-%m-%d %H:%M:%S} UTC")
    return 1


def _live_ids(session: sa.orm.Session, ids: Sequence[int], rule: attention.Unsettled) -> set[int]:
    """Those of the alerts ``ids`` whose grant is still in the same episode."""
    if not ids:
        return set()
    still = sa.or_(*(sa.and_(GrantAlert.kind == kind, attention.live(kind, rule, GrantAlert.since)) for kind in KINDS))
    return set(session.scalars(sa.select(GrantAlert.id).join(Grant, Grant.id == GrantAlert.grant_id)
                               .where(GrantAlert.id.in_(list(ids)), still)))


# --- 2 and 3. the digest -------------------------------------------------------------------------------

@dataclass
class AlertReport(SendCounts):
    detected: int = 0
    planned: int = 0          # digests made in this run
    skipped: int = 0
    pending: int = 0          # alerts waiting for a digest after this run

    def summary(self) -> str:
        text = f"alerts: {self.detected} new, {self.pending} waiting"
        outcomes = [f"{name} {n}" for name, n in (("sent", self.sent), ("retrying", self.retrying),
                                                   ("failed", self.failed), ("outcome unknown", self.unknown),
                                                   ("skipped", self.skipped)) if n]
        if outcomes:
            text += "; digests " + ", ".join(outcomes)
        return text + (f"; not mailed: {self.stopped}" if self.stopped else "")


class AlertMailer(ClaimedMailSender):
    model = AlertDigest
    waiting = PLANNED
    actor = "alerts"
    action = "alert_digest"
    requeued_error = "the sender stopped before handing the digest to the mail server; planned again"
    advice_then = "; it is never sent again, its grants are listed on the first page"
    lease = LEASE
    log = logging.getLogger(__name__)

    def __init__(self, runtime: Runtime, mailer: Mailer | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.alerts
        self.mailer = mailer or Mailer(runtime.settings.smtp)
        self.report = AlertReport()
        self._recipient: Recipient | None = None

    @property
    def interval(self) -> timedelta:
        return timedelta(minutes=self.settings.digest_interval_minutes)

    def recipient(self) -> Recipient:
        if self._recipient is None:
            self._recipient = recipient(self.runtime.settings, self.runtime.reader, self.runtime.sessions)
        return self._recipient

    def blocked(self) -> str:
        """Why no digest can go out now ("" when one can)."""
        if not self.settings.enabled:
            return "alerts.enabled = false"
        if not self.mailer.enabled:
            return "e-mail is disabled (smtp.host and smtp.pickup_dir are empty)"
        return self.recipient().problem

    # --- the worker's job --------------------------------------------------------------------------------

    def run(self) -> AlertReport:
        self.report.detected += detect(self.runtime)
        self.recover_interrupted()
        self.report.stopped = self.blocked() if self._has_work() else ""
        if not self.report.stopped:
            for digest_id in self._due():
                self.deliver(digest_id)
            if not self._open():
                digest_id = self.plan()
                if digest_id is not None:
                    self.deliver(digest_id)
        with self.runtime.sessions() as session:
            self.report.pending = session.scalar(sa.select(sa.func.count()).select_from(GrantAlert)
                                                 .where(GrantAlert.state == PENDING)) or 0
        return self.report

    def _has_work(self) -> bool:
        with self.runtime.sessions() as session:
            return bool(session.scalar(sa.select(GrantAlert.id).where(GrantAlert.state == PENDING).limit(1))
                        or session.scalar(sa.select(AlertDigest.id).where(AlertDigest.state == PLANNED).limit(1)))

    def _due(self) -> list[int]:
        now = self.runtime.clock.now()
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(AlertDigest.id).where(
                AlertDigest.state == PLANNED, sa.or_(AlertDigest.next_attempt_at.is_(None),
                                                     AlertDigest.next_attempt_at <= now)).order_by(AlertDigest.id)))

    def _open(self) -> bool:
        """A digest is still waiting for a retry or being sent: no new one meanwhile."""
        with self.runtime.sessions() as session:
            return session.scalar(sa.select(AlertDigest.id).where(AlertDigest.state.in_((PLANNED, SENDING)))
                                  .limit(1)) is not None

    def plan(self) -> int | None:
        """A new digest of the pending alerts still live, if the last one is older than the interval."""
        now = self.runtime.clock.now()
        rule = attention.Unsettled.of(self.runtime.settings, now)
        with unit_of_work(self.runtime.sessions) as session:
            # Every digest made counts (a failing one too, so a refusing server gets one try per interval),
            # except one skipped because all its grants recovered: nothing went out.
            last = session.scalar(sa.select(sa.func.max(AlertDigest.created_at)).where(AlertDigest.state != SKIPPED))
            if last is not None and last > now - self.interval:
                return None
            pending = list(session.scalars(sa.select(GrantAlert.id).where(GrantAlert.state == PENDING)
                                           .order_by(GrantAlert.detected_at, GrantAlert.id).limit(MAX_PER_DIGEST)))
            live = _live_ids(session, pending, rule)
            gone = [i for i in pending if i not in live]
            if gone:
                session.execute(sa.update(GrantAlert).where(GrantAlert.id.in_(gone), GrantAlert.state == PENDING)
                                .values(state=RESOLVED, updated_at=now).execution_options(synchronize_session=False))
            if not live:
                return None
            digest = AlertDigest(created_at=now, state=PLANNED, reason="", alerts=0, to_address="", language="",
                                 subject="", attempts=0, next_attempt_at=now, updated_at=now, last_error="")
            session.add(digest)
            session.flush()
            taken = session.execute(sa.update(GrantAlert).where(GrantAlert.id.in_(sorted(live)),
                                                                GrantAlert.state == PENDING)
                                    .values(state=DIGESTED, digest_id=digest.id, updated_at=now)
                                    .execution_options(synchronize_session=False)).rowcount
            digest.alerts = taken
            audit.record(session, subject_type="alert_digest", subject_id=str(digest.id), action="alert_digest.planned",
                         at=now, actor="alerts", alerts=taken, left_out=len(gone) or None)
            digest_id = digest.id
        self.report.planned += 1
        return digest_id

    # --- one digest ------------------------------------------------------------------------------------------

    def deliver(self, digest_id: int) -> None:
        holder = self._claim(digest_id, to_address=self.recipient().address[:200],
                             language=digest_language(self.runtime.settings))
        if holder is None:
            self.report.lost_claims += 1
            return
        with self.runtime.sessions() as session:
            row = session.get(AlertDigest, digest_id)
            session.expunge(row)
        if row.claimed_by != holder:
            self.report.lost_claims += 1
            return
        lines = self._recheck(row)
        if not lines:
            self._count(self._finish(row, SKIPPED, "resolved", "every grant of this digest recovered before it went "
                                                               "out"), "skipped")
            return
        mail = self._mail(row, lines)
        self._send(row, lambda: mail)

    def _recheck(self, row: AlertDigest) -> list[AlertLine]:
        """Leave out the alerts whose grant recovered since the digest was planned; the lines of the rest."""
        now = self.runtime.clock.now()
        rule = attention.Unsettled.of(self.runtime.settings, now)
        with unit_of_work(self.runtime.sessions) as session:
            ids = list(session.scalars(sa.select(GrantAlert.id).where(GrantAlert.digest_id == row.id,
                                                                      GrantAlert.state == DIGESTED)))
            live = _live_ids(session, ids, rule)
            gone = [i for i in ids if i not in live]
            if gone:
                session.execute(sa.update(GrantAlert).where(GrantAlert.id.in_(gone), GrantAlert.digest_id == row.id,
                                                            GrantAlert.state == DIGESTED)
                                .values(state=RESOLVED, updated_at=now).execution_options(synchronize_session=False))
            found = session.execute(sa.select(GrantAlert, Grant).join(Grant, Grant.id == GrantAlert.grant_id)
                                    .where(GrantAlert.id.in_(sorted(live)))
                                    .order_by(GrantAlert.kind, GrantAlert.since, GrantAlert.id)).all()
            self._owned(session, row, alerts=len(found), updated_at=now)
            return [self._line(alert, grant) for alert, grant in found]

    def _line(self, alert: GrantAlert, grant: Grant) -> AlertLine:
        base = self.runtime.settings.web.public_url.rstrip("/")
        return AlertLine(grant_id=grant.id, kind=alert.kind, since=alert.since, channel=grant.channel or "",
                         email=grant.email or "", term_id=grant.term_id, status=grant.status,
                         error=grant.last_error or "", link=f"{base}/admin/grants/{grant.id}" if base else "")

    def _mail(self, row: AlertDigest, lines: list[AlertLine]) -> Mail:
        from sidecar.status import site_timezone

        reader = self.runtime.reader
        zone, _source = site_timezone(self.runtime)
        levels = {level.term_id: level.name for level in reader.levels()}
        site = str(reader.option("blogname") or "").strip()
        subject, html, text = render_digest(lines, language=row.language or "en", zone=zone, levels=levels, site=site,
                                            made_at=self.runtime.clock.now())
        with unit_of_work(self.runtime.sessions) as session:
            self._owned(session, row, subject=subject[:300])
        return Mail(to=row.to_address, subject=subject, html=html, text=text,
                    headers={"Auto-Submitted": "auto-generated"}, message_id=row.message_id)

    def _subject(self, row: AlertDigest) -> tuple[str, str]:
        return "alert_digest", str(row.id)

    def _label(self, row: AlertDigest) -> str:
        return f"alert digest {row.id}"

    def _max_attempts(self) -> int:
        return MAX_ATTEMPTS

    def _retry_delay(self, row: AlertDigest) -> timedelta:
        return min(RETRY_BASE * 2 ** (row.attempts - 1), self.interval)

    def _finish_details(self, row: AlertDigest) -> dict[str, Any]:
        return {"to": row.to_address or None}

    def _finished(self, session: sa.orm.Session, row: AlertDigest, state: str, now: datetime) -> None:
        if state == FAILED:
            # Never delivered: its alerts go with the next digest.
            session.execute(sa.update(GrantAlert).where(GrantAlert.digest_id == row.id, GrantAlert.state == DIGESTED)
                            .values(state=PENDING, digest_id=None, updated_at=now)
                            .execution_options(synchronize_session=False))
        elif state in (SENT, UNKNOWN):
            for grant_id in session.scalars(sa.select(GrantAlert.grant_id).where(
                    GrantAlert.digest_id == row.id, GrantAlert.state == DIGESTED)):
                audit.record(session, subject_type="grant", subject_id=grant_id,
                             action="alert.mailed" if state == SENT else "alert.mail_unknown", at=now,
                             actor="alerts", digest_id=row.id, message_id=row.message_id)


def alerts_job(runtime: Runtime) -> str:
    """The worker's job: detect new alerts, then plan and send a digest when one is due."""
    return AlertMailer(runtime).run().summary()


# --- the letter ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlertLine:
    grant_id: str
    kind: str
    since: datetime
    channel: str
    email: str
    term_id: int | None
    status: str
    error: str
    link: str


WORDS: dict[str, dict[str, str]] = {
    "en": {
        "subject": "Grants that need attention: {total} (failed: {failed}, outcome still unknown: {unsettled})",
        "intro": "These grants need an administrator: their learners may be without the access they were sold. "
                 "Each grant is reported once; listed at {made_at}.",
        "col.grant": "Grant", "col.channel": "Channel", "col.email": "E-mail", "col.level": "Level",
        "col.state": "What happened", "col.since": "Since", "col.error": "Last error",
        "kind.failed": "failed",
        "kind.unsettled": "outcome still unknown after the settle time ({status})",
        "level.missing": "level #{id}",
        "failed.hint": "A failed grant can be retried or cancelled on its page (or `mlsidecar grants retry <id>`).",
        "unsettled.hint": "A grant whose outcome is unknown is not ordered again while it may still exist on the site; "
                          "check that the worker runs and reaches the site's database (`mlsidecar doctor`).",
        "no_links": "Set web.public_url to get a link to each grant's page.",
    },
    "ru": {
        "subject": "Выдачи доступа, требующие внимания: {total} (не удались: {failed}, исход всё ещё неизвестен: {unsettled})",
        "intro": "Этим выдачам нужен администратор: ученики, возможно, остались без проданного им доступа. "
                 "О каждой выдаче сообщаем один раз; список составлен {made_at}.",
        "col.grant": "Выдача", "col.channel": "Канал", "col.email": "Почта", "col.level": "Уровень",
        "col.state": "Что случилось", "col.since": "С какого времени", "col.error": "Последняя ошибка",
        "kind.failed": "не удалась",
        "kind.unsettled": "исход всё ещё неизвестен после времени ожидания ({status})",
        "level.missing": "уровень №{id}",
        "failed.hint": "Неудавшуюся выдачу можно повторить или отменить на её странице (или `mlsidecar grants retry <id>`).",
        "unsettled.hint": "Выдачу с неизвестным исходом не заказывают снова, пока заказ может ещё появиться на сайте; "
                          "проверьте, что обработчик запущен и читает базу сайта (`mlsidecar doctor`).",
        "no_links": "Задайте web.public_url, чтобы у каждой выдачи была ссылка на её страницу.",
    },
}


def render_digest(lines: Sequence[AlertLine], *, language: str, zone: Any, levels: dict[int, str], site: str,
                  made_at: datetime) -> tuple[str, str, str]:
    """(subject, HTML, text) of a digest; everything taken from grants is escaped."""
    words = WORDS.get(language, WORDS["en"])

    def when(moment: datetime) -> str:
        return f"{moment.astimezone(zone):%Y-%m-%d %H:%M} ({zone})"

    def level(term_id: int | None) -> str:
        if term_id is None:
            return "—"
        name = levels.get(term_id)
        return f"{name} (#{term_id})" if name else words["level.missing"].format(id=term_id)

    failed = sum(line.kind == FAILED_KIND for line in lines)
    subject = words["subject"].format(total=len(lines), failed=failed, unsettled=len(lines) - failed)
    if site:
        subject = f"[{' '.join(site.split())[:80]}] {subject}"
    heads = [words[f"col.{name}"] for name in ("grant", "channel", "email", "level", "state", "since", "error")]
    rows: list[list[str]] = []
    cells_html: list[str] = []
    for line in lines:
        state = words[f"kind.{line.kind}"].format(status=line.status)
        cells = [line.grant_id, line.channel or "—", line.email or "—", level(line.term_id), state, when(line.since),
                 " ".join(line.error.split()) or "—"]
        rows.append(cells + ([line.link] if line.link else []))
        grant = (Markup('<a href="{0}">{1}</a>').format(line.link, line.grant_id) if line.link
                 else escape(line.grant_id))
        cells_html.append(Markup("<tr>") + Markup("").join(Markup("<td>{0}</td>").format(c) for c in [grant, *cells[1:]])
                          + Markup("</tr>"))
    hints = [words["failed.hint"]] if failed else []
    if failed < len(lines):
        hints.append(words["unsettled.hint"])
    if lines and not lines[0].link:
        hints.append(words["no_links"])
    intro = words["intro"].format(made_at=when(made_at))
    html = (Markup("<p>{0}</p>\n<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n<tr>").format(intro)
            + Markup("").join(Markup("<th>{0}</th>").format(h) for h in heads) + Markup("</tr>\n")
            + Markup("\n").join(cells_html) + Markup("\n</table>\n")
            + Markup("").join(Markup("<p>{0}</p>\n").format(h) for h in hints))
    text = "\n".join([intro, ""] + [" | ".join(cells) for cells in [heads] + rows] + [""] + hints) + "\n"
    return subject, str(html), text


