"""A SQLite store under concurrent writers: the log is synced at checkpoints, and short write
transactions queue at a gate shared by the threads and processes using the file."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

import sqlalchemy as sa

from sidecar.store import db as store_db

NORMAL = 1  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL


def test_a_sqlite_store_is_in_wal_mode_and_syncs_at_checkpoints(tmp_path):
    engine = store_db.create_store_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == NORMAL
    finally:
        engine.dispose()


def test_other_databases_have_no_gate():
    engine = sa.create_engine("sqlite://")
    with store_db.write_gate(engine):
        with store_db.write_gate(engine):  # a no-op context: nesting does not block
            pass


def test_threads_pass_the_gate_one_at_a_time_whatever_the_spelling_of_the_path(tmp_path):
    first = store_db.create_store_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    second = store_db.create_store_engine(f"sqlite:///{tmp_path}/./store.sqlite")
    inside, overlaps, lock = [0], [], threading.Lock()

    def write(engine) -> None:
        for _ in range(50):
            with store_db.write_gate(engine):
                with lock:
                    inside[0] += 1
                    overlaps.append(inside[0])
                with lock:
                    inside[0] -= 1

    threads = [threading.Thread(target=write, args=(engine,)) for engine in (first, second, first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(overlaps) == 200 and max(overlaps) == 1
    assert (tmp_path / "store.sqlite.write-lock").is_file()


def _hold_gate(path: str, held, release) -> None:
    engine = store_db.create_store_engine(f"sqlite:///{path}")
    with store_db.write_gate(engine):
        held.set()
        release.wait(30)


def test_another_process_holding_the_gate_makes_this_one_wait(tmp_path):
    path = str(tmp_path / "store.sqlite")
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_gate, args=(path, held, release))
    holder.start()
    try:
        assert held.wait(60)
        engine = store_db.create_store_engine(f"sqlite:///{path}")
        passed = threading.Event()

        def enter() -> None:
            with store_db.write_gate(engine):
                passed.set()

        waiter = threading.Thread(target=enter)
        waiter.start()
        assert not passed.wait(0.5)  # still held by the other process
        release.set()
        assert passed.wait(30)
        waiter.join()
    finally:
        release.set()
        holder.join(30)


def _commit_then_die(url: str) -> None:
    engine = store_db.create_store_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE facts (what TEXT)")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO facts VALUES ('committed')")
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: the commit is only in the -wal file


def test_a_commit_survives_the_process_being_killed(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    process = multiprocessing.get_context("spawn").Process(target=_commit_then_die, args=(url,))
    process.start()
    process.join(60)
    assert process.exitcode == -signal.SIGKILL
    engine = store_db.create_store_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT what FROM facts").scalars().all() == ["committed"]
    finally:
        engine.dispose()
