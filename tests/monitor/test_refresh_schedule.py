"""The worker keeps the read model fresh: only stale levels are rebuilt."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sidecar.clock import FixedClock
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.worker import refresh_sleepers

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def test_every_level_is_stale_before_the_first_build_and_none_after(runtime):
    runtime.clock = FixedClock(NOW)
    refresher = SleeperRefresher(runtime)
    levels = {level.term_id for level in runtime.reader.levels()}
    assert set(refresher.stale_levels(HOUR)) == levels
    assert {r.term_id for r in refresher.refresh_stale(HOUR)} == levels
    assert refresher.stale_levels(HOUR) == []


def test_age_and_day_change_make_levels_stale(runtime):
    runtime.clock = FixedClock(NOW)
    refresher = SleeperRefresher(runtime)
    refresher.refresh_stale(HOUR)
    runtime.clock = FixedClock(NOW + timedelta(minutes=59))
    assert refresher.stale_levels(HOUR) == []
    runtime.clock = FixedClock(NOW + timedelta(minutes=61))
    assert len(refresher.stale_levels(HOUR)) == len(runtime.reader.levels())
    refresher.refresh_stale(HOUR)
    runtime.clock = FixedClock(datetime(2026, 11, 25, 0, 1, tzinfo=timezone.utc))  # a new UTC day
    assert len(refresher.stale_levels(timedelta(days=1))) == len(runtime.reader.levels())


def test_a_new_certificate_makes_its_level_stale(runtime, emulator):
    import requests

    runtime.clock = FixedClock(NOW)
    refresher = SleeperRefresher(runtime)
    refresher.refresh_stale(HOUR)
    base_url, user, password, _engine = emulator
    from sidecar.monitor.certificates import CertificateClassifier

    level = next(level.term_id for level in runtime.reader.levels()
                 if runtime.reader.level_meta(level.term_id).get("_mblc_has_certificate") == "yes")
    learner = next(u for u in range(4, 60) if runtime.reader.user(u))
    answer = requests.post(base_url + "/devstack/certificates", json={"user_id": learner, "level_id": level},
                           auth=(user, password), timeout=10)
    assert answer.status_code in (200, 201), answer.text
    runtime.clock = FixedClock(NOW + timedelta(minutes=5))
    CertificateClassifier(runtime).sync()
    assert refresher.stale_levels(HOUR) == [level]


def test_worker_job_reports_what_it_did(runtime):
    runtime.clock = FixedClock(NOW)
    assert refresh_sleepers(runtime).startswith(f"{len(runtime.reader.levels())} level(s) rebuilt")
    assert refresh_sleepers(runtime) == "0 level(s) rebuilt"
