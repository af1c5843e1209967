"""Liveness and readiness probes for systemd, load balancers and the docs' monitoring examples."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, jsonify

from sidecar.store.db import VERSION_TABLE
from sidecar.web import current_runtime
from sidecar.web.errors import RETRY_AFTER_SECONDS

blueprint = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@blueprint.get("/healthz")
def healthz():
    """The process answers. Touches no database, so a slow MySQL never restarts a healthy web worker."""
    return jsonify(status="ok")


def _probe(name: str, engine: sa.Engine, statement: sa.Executable) -> str | None:
    """``None`` when the database answers, else the error's class name. The probe is unauthenticated, so the
    answer says which database failed and how, never the driver's text (host names, paths, user names):
    that goes to the log."""
    try:
        with engine.connect() as conn:
            conn.execute(statement)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure makes us not ready
        log.warning("readiness: the %s database does not answer: %s: %s", name, type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "")
        return type(exc).__name__


@blueprint.get("/readyz")
def readyz():
    """Ready to serve: the WordPress database and our store both answer."""
    runtime = current_runtime()
    # A table of each, not just "SELECT 1": a database dropped under us still accepts connections.
    wordpress = sa.select(sa.literal(1)).select_from(runtime.reader.schema.table("options")).limit(1)
    store = sa.select(sa.column("version_num")).select_from(sa.table(VERSION_TABLE))
    problems = {name: error for name, error in (("wordpress", _probe("wordpress", runtime.wp_engine, wordpress)),
                                                ("store", _probe("store", runtime.store_engine, store))) if error}
    if problems:
        # Like every other route with a database down (sidecar.web.errors): 503 with a hint when to retry.
        return jsonify(status="unavailable", problems=problems), 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return jsonify(status="ready")
