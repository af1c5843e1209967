"""`mlsidecar grants list|show|retry|cancel`: output in both formats, the actor, and the error exits."""

from __future__ import annotations

import getpass
import json
import logging

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sidecar.bridge.auth import Principal
from sidecar.bridge.parsers import parse_grant_body
from sidecar.bridge.service import BridgeService, IntakeContext
from sidecar.cli import cli
from sidecar.store.db import unit_of_work
from sidecar.store.grant_models import CANCELLED, FAILED, QUEUED, Grant, GrantAttempt
from sidecar.store.models import AuditEvent


class Store:
    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.service = BridgeService(runtime)

    def accept(self, email: str, *, external_id: str | None = None, term_id: int = 7, duration: int = 1) -> Grant:
        body = {"user": {"email": email}, "grant": {"term_id": term_id, "duration": duration, "units": "months"}}
        if external_id:
            body["external_id"] = external_id
        context = IntakeContext(channel="api", principal=Principal("api_key", "crm"), source_ip="198.51.100.7")
        return self.service.accept(parse_grant_body(body), context).grant

    def fail(self, grant_id: str) -> None:
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            grant = session.get(Grant, grant_id)
            grant.status, grant.attempts, grant.last_error = FAILED, 1, "order refused: product not published"
            session.add(GrantAttempt(grant_id=grant_id, number=1, kind="order", started_at=now, finished_at=now,
                                     outcome="permanent", http_status=400, detail="product not published",
                                     elapsed_ms=31, worker="host:42"))

    def grant(self, grant_id: str) -> Grant:
        with self.runtime.sessions() as session:
            return session.get(Grant, grant_id)

    def last_event(self, grant_id: str) -> AuditEvent:
        with self.runtime.sessions() as session:
            return session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_id == grant_id)
                                   .order_by(AuditEvent.id.desc())).first()


@pytest.fixture
def store(runtime):
    return Store(runtime)


@pytest.fixture
def run(runtime):
    """Invoke the CLI with the runtime fixture's settings already loaded (as `--config` would)."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, list(args), obj={"settings": runtime.settings}, catch_exceptions=False)

    return invoke


def test_list_table_and_json(store, run):
    anna = store.accept("anna@example.org", external_id="deal-1")
    boris = store.accept("boris@example.org", term_id=9, duration=3)
    store.fail(boris.id)

    result = run("grants", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "CREATED", "(UTC)", "STATUS", "CHANNEL", "EMAIL", "LEVEL", "TERM", "ATTEMPTS",
                                "LAST", "ERROR"]
    assert {line.split()[0] for line in lines[1:]} == {anna.id, boris.id}
    assert "anna@example.org" in result.output  # the operator's own tool: e-mail in full
    assert "Английский с нуля" in result.output and "order refused" in result.output

    result = run("grants", "list", "--status", "failed", "--format", "json")
    data = json.loads(result.output)
    assert [g["id"] for g in data["grants"]] == [boris.id] and data["next_cursor"] is None
    assert data["grants"][0]["email"] == "boris@example.org"
    assert data["grants"][0]["level_name"] == "Бизнес-английский"
    assert not any("key_code" in name or name == "code" for name in data["grants"][0])

    assert json.loads(run("grants", "list", "--search", "deal-1", "--format", "json").output)["grants"][0]["id"] == anna.id
    assert json.loads(run("grants", "list", "--channel", "amocrm", "--format", "json").output)["grants"] == []
    assert run("grants", "list", "-q", "nobody").output.strip() == "no grants match"


def test_list_pages_with_a_cursor(store, run, runtime):
    from sidecar.clock import FixedClock

    runtime.clock = FixedClock(runtime.clock.now())
    store.service = BridgeService(runtime)
    ids = [store.accept(f"user{n}@example.org").id for n in range(5)]  # all in the same instant
    first = json.loads(run("grants", "list", "--limit", "2", "--format", "json").output)
    second = json.loads(run("grants", "list", "--limit", "2", "--before", first["next_cursor"], "--format", "json").output)
    third = json.loads(run("grants", "list", "--limit", "2", "--before", second["next_cursor"], "--format", "json").output)
    seen = [g["id"] for page in (first, second, third) for g in page["grants"]]
    assert seen == sorted(ids, reverse=True) and third["next_cursor"] is None

    table = CliRunner().invoke(cli, ["grants", "list", "--limit", "2"], obj={"settings": runtime.settings})
    assert f"more: add --before {first['next_cursor']}" in table.stderr


def test_list_rejects_unknown_status_and_bad_cursor(run):
    result = CliRunner().invoke(cli, ["grants", "list", "--status", "done"], obj={})
    assert result.exit_code == 2 and "'done' is not one of queued" in result.output
    result = run("grants", "list", "--before", "garbage")
    assert result.exit_code == 2 and "not a page cursor" in result.output


def test_show_table_and_json(store, run):
    grant = store.accept("anna@example.org", external_id="deal-9")
    store.fail(grant.id)

    result = run("grants", "show", grant.id)
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("id ") and grant.id in out and "anna@example.org" in out and "deal-9" in out
    assert "attempts (1):" in out and "permanent" in out and "host:42" in out
    assert "audit (3):" in out and "intake.received" in out and "198.51.100.7" in out

    data = json.loads(run("grants", "show", grant.id, "--format", "json").output)
    assert data["grant"]["id"] == grant.id and data["grant"]["status"] == FAILED
    assert data["grant"]["level_name"] == "Английский с нуля"
    assert [(a["kind"], a["outcome"], a["http_status"]) for a in data["attempts"]] == [("order", "permanent", 400)]
    assert [e["action"] for e in data["audit"]][:2] == ["intake.received", "intake.validated"]


def test_retry_and_cancel_record_the_os_user(store, run):
    grant = store.accept("anna@example.org")
    store.fail(grant.id)
    actor = f"cli:{getpass.getuser()}"

    result = run("grants", "retry", grant.id)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"grant {grant.id}: failed -> queued"
    assert store.grant(grant.id).status == QUEUED
    event = store.last_event(grant.id)
    assert (event.action, event.actor) == ("admin.retry", actor)

    result = run("grants", "cancel", grant.id)
    assert result.exit_code == 0 and result.output.strip() == f"grant {grant.id}: queued -> cancelled"
    assert store.grant(grant.id).status == CANCELLED
    assert (store.last_event(grant.id).action, store.last_event(grant.id).actor) == ("admin.cancel", actor)


@pytest.mark.parametrize("command", ["show", "retry", "cancel"])
def test_unknown_id_exits_1(run, command):
    result = run("grants", command, "gnosuchgrant")
    assert result.exit_code == 1
    assert "no grant" in result.output and "gnosuchgrant" in result.output


def test_action_not_allowed_exits_1(store, run):
    grant = store.accept("anna@example.org")
    result = run("grants", "retry", grant.id)
    assert result.exit_code == 1
    assert "is queued; only failed or cancelled grants can be retried" in result.output
    run("grants", "cancel", grant.id)
    result = run("grants", "cancel", grant.id)
    assert result.exit_code == 1 and "only queued, fetching or failed grants can be cancelled" in result.output
    assert store.grant(grant.id).status == CANCELLED


@pytest.fixture
def restore_logging():
    """Loading a config file configures logging for the process; put pytest's handlers back afterwards."""
    names = ("", "werkzeug", "alembic", "apscheduler", "urllib3")
    saved = [(logging.getLogger(n), list(logging.getLogger(n).handlers), logging.getLogger(n).level) for n in names]
    yield
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def test_through_a_config_file(store, runtime, tmp_path, restore_logging):
    """The real entry path: `--config` with a TOML file, no prepared settings."""
    grant = store.accept("anna@example.org")
    settings = runtime.settings
    config = tmp_path / "grants.toml"
    config.write_text(
        "[wordpress]\n"
        f'db_url = "{settings.wordpress.db_url}"\n'
        "[memberlux]\n"
        f'rest_base_url = "{settings.memberlux.rest_base_url}"\n'
        f'rest_user = "{settings.memberlux.rest_user}"\n'
        'rest_password = "env:TEST_GRANTS_REST_PW"\n'
        "[store]\n"
        f'url = "{settings.store.url}"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "grants", "show", grant.id, "--format", "json"],
                                env={"TEST_GRANTS_REST_PW": settings.memberlux.rest_password.reveal()})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["grant"]["email"] == "anna@example.org"
