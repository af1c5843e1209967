"""`mlsidecar doctor` against the emulated site: every check reported, failures explained."""

from __future__ import annotations

import sqlalchemy as sa

from sidecar.bootstrap import store_url
from sidecar.doctor import FAIL, OK, SKIP, WARN, Doctor, render_table
from sidecar.store import db as store_db


def checks_by_name(settings) -> dict:
    doctor = Doctor(settings)
    try:
        return {c.name: c for c in doctor.run()}
    finally:
        doctor.close()


def migrate(settings) -> None:
    engine = store_db.create_store_engine(store_url(settings))
    store_db.upgrade(engine)
    engine.dispose()


def test_healthy_demo_site(small_site, emulator, settings_for):
    settings = settings_for(small_site, emulator)
    migrate(settings)
    checks = checks_by_name(settings)
    for name in ("WordPress database", "Read-only access", "MemberLux tables", "Optional modules", "Site time zone",
                 "Payments auto-activation", "MemberLux REST API", "Store database", "Store migrations"):
        assert checks[name].status == OK, (name, checks[name].detail)
    assert "manage_options" in checks["MemberLux REST API"].detail
    assert checks["Background worker"].status == WARN  # no worker ran in this test
    assert checks["SMTP"].status == WARN and "disabled" in checks["SMTP"].detail
    assert checks["Reminders"].status == WARN and "web.public_url not set" in checks["Reminders"].detail
    table = render_table(list(checks.values()))
    assert "OK    WordPress database" in table


def test_wrong_rest_password_fails_with_reason(small_site, emulator, settings_for):
    base_url, user, _password, engine = emulator
    settings = settings_for(small_site, (base_url, user, "wrong-password", engine))
    check = checks_by_name(settings)["MemberLux REST API"]
    assert check.status == FAIL and "401" in check.detail


def test_unreachable_site_and_missing_tables(tmp_path, settings_for):
    settings = settings_for(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    checks = checks_by_name(settings)
    assert checks["WordPress database"].status == OK
    assert checks["MemberLux tables"].status == FAIL and "wp_users" in checks["MemberLux tables"].detail
    assert checks["Optional modules"].status == SKIP
    assert checks["MemberLux REST API"].status == FAIL
    assert checks["Store migrations"].status == FAIL and "mlsidecar db upgrade" in checks["Store migrations"].detail


def test_wrong_prefix_is_named(small_site, emulator, settings_for):
    settings = settings_for(small_site, emulator, wordpress={"table_prefix": "wpx_"})
    check = checks_by_name(settings)["MemberLux tables"]
    assert check.status == FAIL and "wpx_" in check.detail


def test_worker_heartbeat_seen(runtime):
    from datetime import timedelta

    from sidecar.worker import heartbeat, run_leased

    assert run_leased(runtime, "worker.heartbeat", heartbeat, timedelta(seconds=30))
    check = checks_by_name(runtime.settings)["Background worker"]
    assert check.status == OK and "heartbeat" in check.detail


def test_smtp_reachable(small_site, emulator, settings_for, smtp_server):
    host, port, _inbox = smtp_server
    settings = settings_for(small_site, emulator, smtp={"host": host, "port": port, "security": "none",
                                                        "from_address": "school@example.org"})
    check = checks_by_name(settings)["SMTP"]
    assert check.status == OK and f"{host}:{port}" in check.detail


def test_smtp_down_fails(small_site, emulator, settings_for):
    settings = settings_for(small_site, emulator, smtp={"host": "127.0.0.1", "port": 9, "security": "none",
                                                        "from_address": "school@example.org"})
    assert checks_by_name(settings)["SMTP"].status == FAIL


def test_reminders_readiness_and_last_run(small_site, emulator, settings_for, smtp_server):
    from datetime import datetime, timedelta, timezone

    from sidecar.bootstrap import store_url
    from sidecar.store import leases
    from sidecar.worker import REMINDERS_DAILY_JOB

    host, port, _inbox = smtp_server
    settings = settings_for(small_site, emulator, web={"public_url": "https://side.example"},
                            smtp={"host": host, "port": port, "security": "none", "from_address": "s@example.org"})
    migrate(settings)
    check = checks_by_name(settings)["Reminders"]
    assert check.status == OK and "sending, daily at 09:00 (site); not run yet" in check.detail
    engine = store_db.create_store_engine(store_url(settings))
    sessions = store_db.session_factory(engine)
    now = datetime.now(timezone.utc)
    leases.try_acquire(sessions, REMINDERS_DAILY_JOB, "w", timedelta(hours=1), now)
    leases.release(sessions, REMINDERS_DAILY_JOB, "w", now, "failed: OperationalError: gone away")
    engine.dispose()
    check = checks_by_name(settings)["Reminders"]
    assert check.status == WARN and "failed: OperationalError" in check.detail
    off = settings_for(small_site, emulator, reminders={"enabled": False})
    migrate(off)
    assert checks_by_name(off)["Reminders"].status == OK


def test_memberlux_webhook_registration_is_reported_without_the_token(small_site, emulator, settings_for):
    *_, engine = emulator
    hook = sa.Table("wp_memberlux_hook", sa.MetaData(), autoload_with=engine)
    action = sa.Table("wp_memberlux_hook_action", sa.MetaData(), autoload_with=engine)
    token = "hook-token-not-for-production-123"
    settings = settings_for(small_site, emulator, web={"public_url": "https://side.example"},
                            webhooks={"memberlux_path_token": token})
    migrate(settings)
    assert "no MemberLux webhook points at https://side.example/hooks/memberlux/" in \
        checks_by_name(settings)["MemberLux webhooks"].detail
    with engine.begin() as conn:
        conn.execute(hook.insert().values(id=90, destination="https://side.example/hooks/memberlux/old-token", sort=9))
    check = checks_by_name(settings)["MemberLux webhooks"]
    assert check.status == FAIL and "another token" in check.detail and "old-token" not in check.detail
    with engine.begin() as conn:
        conn.execute(hook.insert().values(id=91, destination=f"https://side.example/hooks/memberlux/{token}", sort=10))
        conn.execute(action.insert(), [{"hook_id": 91, "action": "activation_page"}, {"hook_id": 91, "action": "purchase"}])
    check = checks_by_name(settings)["MemberLux webhooks"]
    assert check.status == OK and check.detail == "MemberLux webhook 91 calls the sidecar for: activation_page, purchase"
    assert token not in check.detail


def test_secrets_written_in_the_configuration_are_pointed_out(small_site, emulator, settings_for, tmp_path, monkeypatch):
    settings = settings_for(small_site, emulator)          # the test settings carry literal secrets
    migrate(settings)
    check = checks_by_name(settings)["Secrets"]
    assert check.status == WARN and "memberlux.rest_password" in check.detail and "web.secret_key" in check.detail
    from sidecar.config import settings_from_mapping

    secret_file = tmp_path / "rest-password"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("MLS_TEST_WEB_KEY", "from-the-environment")
    clean = settings_from_mapping({
        "wordpress": {"db_url": small_site}, "store": {"url": settings.store.url},
        "memberlux": {"rest_base_url": settings.memberlux.rest_base_url, "rest_user": "u",
                      "rest_password": f"file:{secret_file}"},
        "web": {"secret_key": "env:MLS_TEST_WEB_KEY"}}, environ={})
    assert checks_by_name(clean)["Secrets"].status == OK
