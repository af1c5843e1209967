"""The worker keeps the read model fresh: one full rebuild, then change scans, a reconciling rebuild daily."""

from __future__ import annotations

import html
from datetime import date, datetime, timedelta, timezone

import pytest
import requests
import sqlalchemy as sa

from sidecar.clock import FixedClock
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.store.monitor_models import SleeperEntry, SleeperRefresh, SleeperScan
from sidecar.worker import refresh_sleepers

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def test_the_first_run_rebuilds_every_level_and_the_next_finds_nothing_to_do(runtime):
    runtime.clock = FixedClock(NOW)
    refresher = SleeperRefresher(runtime)
    first = refresher.refresh_stale(DAY)
    assert first.kind == "rebuild"
    assert {r.term_id for r in first.reports} == {level.term_id for level in runtime.reader.levels()}
    runtime.clock = FixedClock(NOW + timedelta(seconds=30))
    second = refresher.refresh_stale(DAY)
    assert second.kind == "idle"
    with runtime.sessions() as session:
        checked = {r.checked_at for r in session.scalars(sa.select(SleeperRefresh))}
        refreshed = {r.refreshed_at for r in session.scalars(sa.select(SleeperRefresh))}
    assert checked == {NOW + timedelta(seconds=30)}      # every level known current as of the scan
    assert refreshed == {NOW}                            # the last full rebuild is still the first


def test_the_rebuild_is_repeated_once_the_last_one_is_older_than_the_age(runtime):
    hour = timedelta(hours=1)
    runtime.clock = FixedClock(NOW)
    refresher = SleeperRefresher(runtime)
    refresher.refresh_stale(hour)
    runtime.clock = FixedClock(NOW + timedelta(minutes=59))
    assert refresher.refresh_stale(hour).kind == "idle"
    runtime.clock = FixedClock(NOW + timedelta(minutes=61))
    outcome = refresher.refresh_stale(hour)
    assert outcome.kind == "rebuild" and outcome.missed == {}
    with runtime.sessions() as session:
        state = session.get(SleeperScan, "site")
        assert state.reconciled_at == NOW + timedelta(minutes=61) and state.missed == {}


def test_a_new_certificate_takes_its_learner_out_of_the_report_at_the_next_scan(runtime, emulator):
    runtime.clock = FixedClock(NOW)
    refresher = SleeperRefresher(runtime)
    refresher.refresh_stale(DAY)
    manual_levels = {level.term_id for level in runtime.reader.levels()
                     if runtime.reader.level_meta(level.term_id).get("_mblc_has_certificate") == "yes"}
    with runtime.sessions() as session:
        sleeper = session.scalars(sa.select(SleeperEntry).where(SleeperEntry.term_id.in_(manual_levels))
                                  .order_by(SleeperEntry.user_id)).first()
    assert sleeper is not None, "the seeded site has sleepers on a level with certificates"
    base_url, user, password, _engine = emulator
    answer = requests.post(base_url + "/devstack/certificates",
                           json={"user_id": sleeper.user_id, "level_id": sleeper.term_id},
                           auth=(user, password), timeout=10)
    assert answer.status_code in (200, 201), answer.text

    runtime.clock = FixedClock(NOW + timedelta(seconds=30))
    outcome = refresher.refresh_stale(DAY)
    assert outcome.kind == "scan" and outcome.rows_changed >= 1
    with runtime.sessions() as session:
        assert session.get(SleeperEntry, (sleeper.term_id, sleeper.user_id)) is None


def test_worker_job_reports_a_rebuild_then_scans(runtime):
    runtime.clock = FixedClock(NOW)
    assert refresh_sleepers(runtime).startswith(f"full rebuild of {len(runtime.reader.levels())} level(s)")
    assert refresh_sleepers(runtime).startswith("no change on the site")
    runtime.clock = FixedClock(datetime(2026, 11, 25, 0, 1, tzinfo=timezone.utc))   # a new UTC day
    assert "evaluated again" in refresh_sleepers(runtime)
    with runtime.sessions() as session:
        assert {r.evaluated_for for r in session.scalars(sa.select(SleeperRefresh))} == {date(2026, 11, 25)}


def test_the_status_page_tells_the_last_scan_rebuild_and_reconciliation(runtime, admin_pages):
    runtime.clock = FixedClock(NOW)

    def page(url: str) -> str:
        _app, client = admin_pages.signed_in(runtime)    # signed in now: a session ages with the clock
        response = client.get(url, follow_redirects=True)
        assert response.status_code == 200
        return html.unescape(response.get_data(as_text=True))

    assert "not built yet" in page("/status?lang=en")
    SleeperRefresher(runtime).refresh_stale(DAY)
    runtime.clock = FixedClock(NOW + timedelta(seconds=30))
    SleeperRefresher(runtime).refresh_stale(DAY)
    shown = page("/status?lang=en")
    assert "last change scan 2026-11-24 10:00:30 UTC" in shown and "0 learner(s) evaluated again" in shown
    assert "last full rebuild 2026-11-24 10:00:00 UTC" in shown and "no reconciliation yet" in shown
    runtime.clock = FixedClock(NOW + DAY + timedelta(hours=1))
    SleeperRefresher(runtime).refresh_stale(DAY)
    assert "последняя сверка (2026-11-25 11:00:00 UTC) не нашла ничего" in page("/status?lang=ru")


def test_a_rebuild_by_hand_waits_for_the_worker_and_says_so_when_it_cannot(runtime, admin_pages, monkeypatch):
    """A "refresh now" (page or command) and the worker's scan never write the model at once."""
    from sidecar.jobs import SLEEPERS_REFRESH_JOB
    from sidecar.monitor import refresh
    from sidecar.monitor.increments import RefreshBusy
    from sidecar.store import leases

    runtime.clock = FixedClock(NOW)
    assert leases.try_acquire(runtime.sessions, SLEEPERS_REFRESH_JOB, "worker-elsewhere:1", DAY, NOW)
    monkeypatch.setattr(refresh, "WAIT_FOR_WORKER_SECONDS", 0.0)
    with pytest.raises(RefreshBusy, match="try again shortly"):
        SleeperRefresher(runtime).refresh_all()
    with pytest.raises(RefreshBusy):
        SleeperRefresher(runtime).refresh_level(7)
    _app, client = admin_pages.signed_in(runtime)
    token = admin_pages.csrf_in(client.get("/monitor").get_data(as_text=True))
    page = client.post("/monitor/refresh?lang=en", data={"csrf_token": token}, follow_redirects=True)
    assert "did not finish within two minutes" in html.unescape(page.get_data(as_text=True))

    leases.release(runtime.sessions, SLEEPERS_REFRESH_JOB, "worker-elsewhere:1", NOW, "ok")
    assert len(SleeperRefresher(runtime).refresh_all()) == len(runtime.reader.levels())
