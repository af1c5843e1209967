"""Job leases: one holder at a time, across processes, on SQLite and MariaDB."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from sidecar.store import db as store_db
from sidecar.store import leases

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
TTL = timedelta(minutes=5)


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def sessions(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("mariadb_database")
    engine = store_db.create_store_engine(url)
    store_db.upgrade(engine)
    yield store_db.session_factory(engine)
    engine.dispose()


def test_first_taker_wins_until_expiry(sessions):
    assert leases.try_acquire(sessions, "job", "a", TTL, T0)
    assert not leases.try_acquire(sessions, "job", "b", TTL, T0 + timedelta(minutes=1))
    assert leases.try_acquire(sessions, "job", "b", TTL, T0 + TTL)


def test_release_records_outcome_and_frees_the_lease(sessions):
    leases.try_acquire(sessions, "job", "a", TTL, T0)
    leases.release(sessions, "job", "a", T0 + timedelta(seconds=3), "ok: 12 items")
    lease = leases.get(sessions, "job")
    assert lease.last_outcome == "ok: 12 items" and lease.last_finished_at == T0 + timedelta(seconds=3)
    assert leases.try_acquire(sessions, "job", "b", TTL, T0 + timedelta(seconds=4))


def test_release_by_a_non_holder_changes_nothing(sessions):
    leases.try_acquire(sessions, "job", "a", TTL, T0)
    leases.release(sessions, "job", "intruder", T0, "done")
    assert not leases.try_acquire(sessions, "job", "b", TTL, T0 + timedelta(seconds=1))


def test_concurrent_takers_get_exactly_one_lease(sessions):
    winners = []
    barrier = threading.Barrier(8)

    def take(name: str) -> None:
        barrier.wait()
        if leases.try_acquire(sessions, "race", name, TTL, T0):
            winners.append(name)

    threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_a_long_outcome_keeps_its_whole_leading_clauses_and_says_it_was_cut(sessions):
    long = "planned send 6; sent 6, retrying 0; not approved, nothing sent: level " + ", ".join(
        f"{t} (10 letter(s))" for t in range(11, 40)) + "; review them at /reminders/approvals"
    assert leases.try_acquire(sessions, "job", "a", TTL, T0)
    leases.release(sessions, "job", "a", T0, long)
    kept = leases.get(sessions, "job").last_outcome
    assert kept == "planned send 6; sent 6, retrying 0…"
    assert leases.clip_outcome("short; enough") == "short; enough"
    assert leases.clip_outcome("x" * 300) == "x" * 199 + "…"
