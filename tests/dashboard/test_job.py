"""The worker's dashboard job: it stores "what happened after each letter" for every outcome window and
level, equal to the direct computation of each window and to the brute force over the raw rows (SQLite
and MariaDB); a later run replaces the rows; two runs started at once compute it once (the lease)."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from sidecar.dashboard import service, snapshots
from sidecar.dashboard.job import compute_job
from sidecar.dashboard.outcomes import comparison_delays
from sidecar.domain.letter_outcomes import WINDOW_CHOICES
from sidecar.jobs import DASHBOARD_JOB
from sidecar.store import leases
from sidecar.store.dashboard_models import DashboardSnapshot
from sidecar.worker import DASHBOARD_LEASE, run_leased
from tests.dashboard.support import Key, Site, brute_force, dashboard_figures, random_site
from tests.databases import fresh_database
from tests.reminders.school import LEVEL, OTHER_LEVEL

TODAY = date(2026, 11, 24)
DELAYS = (3, 10, 30)


def a_site(school_factory, seed: int, **urls) -> Site:
    school = school_factory(day=TODAY, **urls)
    school.schedule(DELAYS, admin_days=None)      # LEVEL has letters; OTHER_LEVEL has none
    site = Site(school)
    random_site(site, seed, TODAY, DELAYS)
    return site


def stored(runtime, window: int) -> snapshots.Snapshot | None:
    with runtime.sessions() as session:
        return snapshots.load(session, window)


def direct(runtime, window: int):
    levels = runtime.reader.levels()
    return service.after_letters(runtime, TODAY, window, [lv.term_id for lv in levels],
                                 service.configured_delays(runtime, levels))


def assert_the_job_stores_what_the_direct_computation_and_the_brute_force_give(site: Site) -> None:
    runtime = site.school.runtime
    assert stored(runtime, 14) is None
    assert run_leased(runtime, DASHBOARD_JOB, compute_job, DASHBOARD_LEASE)
    lease = leases.get(runtime.sessions, DASHBOARD_JOB)
    assert lease.last_outcome.startswith("2 level(s) in "), lease.last_outcome
    delays = comparison_delays({LEVEL: DELAYS, OTHER_LEVEL: (None, None, None)})
    for window in WINDOW_CHOICES:
        snapshot = stored(runtime, window)
        assert snapshot is not None
        assert snapshot.after == direct(runtime, window)
        expected = brute_force(site, TODAY, window, delays)
        assert sum(v[0][0] + v[1][0] for v in expected.values()) > 10, "the random site should measure something"
        assert dashboard_figures(snapshot.after) == expected
        assert (snapshot.computed_for, snapshot.computed_at) == (TODAY, runtime.clock.now())
        assert 0 <= snapshot.seconds < 600


@pytest.mark.parametrize("seed", [1, 2])
def test_the_job_stores_every_window_as_computed_directly(school_factory, seed):
    assert_the_job_stores_what_the_direct_computation_and_the_brute_force_give(a_site(school_factory, seed))


@pytest.mark.mariadb
def test_the_job_stores_every_window_as_computed_directly_on_mariadb(school_factory, mariadb_database,
                                                                     mariadb_admin_url):
    with fresh_database(mariadb_admin_url) as store_url:
        site = a_site(school_factory, 5, site_url=mariadb_database, store_url=store_url)
        assert_the_job_stores_what_the_direct_computation_and_the_brute_force_give(site)
        site.school.close()


def test_a_later_run_replaces_each_windows_row(school_factory):
    site = a_site(school_factory, 3)
    runtime = site.school.runtime
    compute_job(runtime)
    first = stored(runtime, 30)
    for user in sorted(site.users):        # every learner renews today: a new key for each
        site.key(Key(user, LEVEL, TODAY, TODAY + timedelta(days=30)))
    site.school.advance(days=1)
    compute_job(runtime)
    later = stored(runtime, 30)
    with runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DashboardSnapshot)) == len(WINDOW_CHOICES)
    assert later.computed_for == TODAY + timedelta(days=1) and later.computed_at > first.computed_at
    assert later.after.last_day == first.after.last_day + timedelta(days=1)
    assert later.after == service.after_letters(runtime, TODAY + timedelta(days=1), 30,
                                                [lv.term_id for lv in runtime.reader.levels()],
                                                service.configured_delays(runtime, runtime.reader.levels()))


def test_two_runs_started_at_once_compute_it_once(school_factory, monkeypatch):
    """Two workers (two threads here) start the job together: the one that gets the lease computes, the
    other skips that run and stores nothing."""
    site = a_site(school_factory, 4)
    runtime = site.school.runtime
    inside, go_on, runs = threading.Event(), threading.Event(), []

    def slow_job(rt) -> str:
        runs.append(threading.current_thread().name)
        inside.set()
        assert go_on.wait(30)
        return compute_job(rt)

    first = threading.Thread(target=run_leased, args=(runtime, DASHBOARD_JOB, slow_job, DASHBOARD_LEASE), name="first")
    first.start()
    assert inside.wait(30)
    with monkeypatch.context() as other_process:    # the second worker: another host or process
        other_process.setattr("sidecar.worker.holder_name", lambda: "other-host:2")
        assert not run_leased(runtime, DASHBOARD_JOB, slow_job, DASHBOARD_LEASE)
    assert stored(runtime, 14) is None
    go_on.set()
    first.join(30)
    assert runs == ["first"] and stored(runtime, 14) is not None
