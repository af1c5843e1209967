"""Prometheus ``/metrics``.

Business figures are read from the store at scrape time, so every web worker process answers the
same numbers whichever one the scrape reaches (no multiprocess registry needed): grants by status
and the outbox's depth and age, reminders and webhook deliveries by state, sleepers per level, the
background jobs' last duration and outcome, and a round-trip probe of both databases. Query latency
of the process that answers is a histogram fed by SQLAlchemy's cursor events.

Access: a bearer token from ``web.api_tokens`` with the ``read`` scope, or no token at all when
``web.metrics_open`` is on (for a scraper on a private network); the figures hold no personal data
either way.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import Blueprint, Response, request
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sidecar.bootstrap import Runtime
from sidecar.config import scopes_of
from sidecar.web import app_singleton, current_runtime
from sidecar.web.auth import csrf_exempt

blueprint = Blueprint("metrics", __name__)
csrf_exempt(blueprint)

QUERY_SECONDS = Histogram(
    "mlsidecar_db_query_seconds", "Duration of SQL statements run by this process.", ["database"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=None)


_INSTRUMENTED: dict[int, object] = {}


def instrument(engine: sa.Engine, database: str) -> None:
    """Time every statement of ``engine`` into :data:`QUERY_SECONDS` (idempotent per engine)."""
    if sa.event.contains(engine, "after_cursor_execute", _INSTRUMENTED.get(id(engine))):
        return
    child = QUERY_SECONDS.labels(database)

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _start(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("mlsidecar_started", []).append(time.perf_counter())

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _stop(conn, cursor, statement, parameters, context, executemany):
        started = conn.info.get("mlsidecar_started")
        if started:
            child.observe(time.perf_counter() - started.pop())

    _INSTRUMENTED[id(engine)] = _stop


def _age(moment: datetime | None, now: datetime) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max((now - moment).total_seconds(), 0.0)


class StoreCollector:
    """Reads the figures from the store when Prometheus scrapes."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        from sidecar.store.grant_models import ALL_STATES, OPEN_STATES, Grant
        from sidecar.store.models import JobLease
        from sidecar.store.monitor_models import SleeperRefresh
        from sidecar.store.program_models import Enrolment, ProgramInbox
        from sidecar.store.reminder_models import Reminder, ReminderDigest
        from sidecar.store.webhook_models import WebhookDelivery

        now = self.runtime.clock.now()
        names = {}
        try:
            names = {level.term_id: level.name for level in self.runtime.reader.levels()}
        except Exception:  # noqa: BLE001, S110 - the probe below reports an unreachable WordPress
            pass
        with self.runtime.sessions() as session:
            def by(column, model, *where):
                return session.execute(sa.select(column, sa.func.count()).select_from(model).where(*where)
                                       .group_by(column)).all()

            grants = GaugeMetricFamily("mlsidecar_grants", "Grants in the store by status "
                                       "(alert on status=\"duplicated\" > 0 and on status=\"failed\").", labels=["status"])
            # Every state is exported, zeros included, so an alert on "duplicated" sees a series from the start.
            counts = dict.fromkeys(ALL_STATES, 0) | dict(by(Grant.status, Grant))
            for status, n in counts.items():
                grants.add_metric([status], n)
            yield grants
            depth, oldest = session.execute(sa.select(sa.func.count(), sa.func.min(Grant.created_at))
                                            .where(Grant.status.in_(OPEN_STATES))).one()
            yield GaugeMetricFamily("mlsidecar_outbox_depth", "Grants not yet finished.", value=depth)
            yield GaugeMetricFamily("mlsidecar_outbox_oldest_age_seconds", "Age of the oldest unfinished grant.",
                                    value=_age(oldest, now))
            reminders = GaugeMetricFamily("mlsidecar_reminders", "Reminder ledger rows by state and step.",
                                          labels=["state", "step"])
            for (state, step), n in ((k, v) for *k, v in session.execute(
                    sa.select(Reminder.state, Reminder.step, sa.func.count()).group_by(Reminder.state, Reminder.step))):
                reminders.add_metric([state, "digest" if step == 4 else str(step)], n)
            yield reminders
            digests = GaugeMetricFamily("mlsidecar_reminder_digests", "Admin digests by state.", labels=["state"])
            for state, n in by(ReminderDigest.state, ReminderDigest):
                digests.add_metric([state], n)
            yield digests
            deliveries = GaugeMetricFamily("mlsidecar_webhook_deliveries", "Webhook deliveries by state.",
                                           labels=["state"])
            for state, n in by(WebhookDelivery.state, WebhookDelivery):
                deliveries.add_metric([state], n)
            yield deliveries
            pending = session.scalar(sa.select(sa.func.min(WebhookDelivery.created_at))
                                     .where(WebhookDelivery.state.in_(("pending", "delivering"))))
            yield GaugeMetricFamily("mlsidecar_webhook_oldest_pending_age_seconds",
                                    "Age of the oldest undelivered webhook.", value=_age(pending, now))
            sleepers = GaugeMetricFamily("mlsidecar_sleepers", "Sleepers per level (last rebuild).",
                                         labels=["term_id", "level"])
            for row in session.scalars(sa.select(SleeperRefresh)):
                sleepers.add_metric([str(row.term_id), names.get(row.term_id, "")], row.sleepers)
            yield sleepers
            enrolments = GaugeMetricFamily("mlsidecar_enrolments", "Program enrolments by status.", labels=["status"])
            for status, n in by(Enrolment.status, Enrolment):
                enrolments.add_metric([status], n)
            yield enrolments
            yield GaugeMetricFamily("mlsidecar_program_inbox", "Certificates waiting to be matched to enrolments.",
                                    value=session.scalar(sa.select(sa.func.count()).select_from(ProgramInbox)))
            duration = GaugeMetricFamily("mlsidecar_job_last_duration_seconds", "Duration of each job's last run.",
                                         labels=["job"])
            age = GaugeMetricFamily("mlsidecar_job_last_run_age_seconds", "Time since each job last finished.",
                                    labels=["job"])
            ok = GaugeMetricFamily("mlsidecar_job_last_run_ok", "1 when the job's last run did not fail.", labels=["job"])
            for lease in session.scalars(sa.select(JobLease)):
                if lease.last_started_at and lease.last_finished_at and lease.last_finished_at >= lease.last_started_at:
                    duration.add_metric([lease.name], (lease.last_finished_at - lease.last_started_at).total_seconds())
                if lease.last_finished_at:
                    age.add_metric([lease.name], _age(lease.last_finished_at, now))
                    ok.add_metric([lease.name], 0 if (lease.last_outcome or "").startswith("failed") else 1)
            yield duration
            yield age
            yield ok
        probe = GaugeMetricFamily("mlsidecar_db_ping_seconds", "Round trip of SELECT 1 at scrape time (-1: down).",
                                  labels=["database"])
        for database, engine in (("wordpress", self.runtime.wp_engine), ("store", self.runtime.store_engine)):
            started = time.perf_counter()
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                probe.add_metric([database], time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - reported as -1
                probe.add_metric([database], -1)
        yield probe


def _registry(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(runtime))
    registry.register(QUERY_SECONDS)
    instrument(runtime.wp_engine, "wordpress")
    instrument(runtime.store_engine, "store")
    return registry


def _authorised(runtime: Runtime) -> bool | None:
    """True: let in; False: no valid token (401); None: a valid token without the ``read`` scope (403)."""
    web = runtime.settings.web
    if web.metrics_open:
        return True
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not sent.strip():
        return False
    matched = None
    for name, token in web.api_tokens.items():  # every token costs one comparison
        if hmac.compare_digest(sent.strip().encode(), token.reveal().encode()):
            matched = name
    if matched is None:
        return False
    return True if "read" in scopes_of(web.api_tokens[matched]) else None


@blueprint.get("/metrics")
def metrics() -> Response:
    runtime = current_runtime()
    allowed = _authorised(runtime)
    if allowed is None:
        return Response("this token lacks the 'read' scope (web.api_tokens)\n", 403,
                        {"WWW-Authenticate": 'Bearer realm="metrics", error="insufficient_scope", scope="read"',
                         "Content-Type": "text/plain; charset=utf-8"})
    if not allowed:
        return Response("send 'Authorization: Bearer <token>' (web.api_tokens), or set web.metrics_open\n", 401,
                        {"WWW-Authenticate": 'Bearer realm="metrics"', "Content-Type": "text/plain; charset=utf-8"})
    registry = app_singleton("metrics.registry", _registry)
    return Response(generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST})
