"""Prometheus /metrics: the store's figures at scrape time, behind a bearer token."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.app import create_app

TOKEN = "metrics-token-not-for-production"


def client_for(small_site, emulator, settings_for, make_runtime, **web):
    runtime = make_runtime(settings_for(small_site, emulator, web={"api_tokens": {"prometheus": TOKEN}, **web}))
    return runtime, create_app(runtime, testing=True).test_client()


@pytest.fixture
def scrape(small_site, emulator, settings_for, make_runtime):
    return client_for(small_site, emulator, settings_for, make_runtime)


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_need_a_token(scrape):
    _runtime, client = scrape
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_metrics_report_the_stores_figures(scrape):
    from sidecar.monitor.refresh import SleeperRefresher
    from sidecar.worker import heartbeat, run_leased
    from datetime import timedelta

    runtime, client = scrape
    SleeperRefresher(runtime).refresh_all()
    run_leased(runtime, "worker.heartbeat", heartbeat, timedelta(minutes=1))
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.headers["Content-Type"].startswith("text/plain")
    found = families(answer.get_data(as_text=True))
    for name in ("mlsidecar_grants", "mlsidecar_outbox_depth", "mlsidecar_outbox_oldest_age_seconds",
                 "mlsidecar_reminders", "mlsidecar_webhook_deliveries", "mlsidecar_sleepers",
                 "mlsidecar_job_last_duration_seconds", "mlsidecar_db_ping_seconds", "mlsidecar_db_query_seconds",
                 "mlsidecar_enrolments", "mlsidecar_program_inbox"):
        assert name in found, name
    sleepers = {s.labels["term_id"]: s.value for s in found["mlsidecar_sleepers"].samples}
    assert set(sleepers) == {str(level.term_id) for level in runtime.reader.levels()}
    pings = {s.labels["database"]: s.value for s in found["mlsidecar_db_ping_seconds"].samples}
    assert pings["wordpress"] >= 0 and pings["store"] >= 0
    jobs = {s.labels["job"]: s.value for s in found["mlsidecar_job_last_run_ok"].samples}
    assert jobs["worker.heartbeat"] == 1


def test_metrics_can_be_opened_for_a_private_scraper(small_site, emulator, settings_for, make_runtime):
    _runtime, client = client_for(small_site, emulator, settings_for, make_runtime, metrics_open=True)
    assert client.get("/metrics").status_code == 200
