"""Engine, sessions and migrations of our store.

The store must never land inside the WordPress database by accident: a mistaken URL would mix our
tables with MemberLux's and, worse, give a write-capable connection to the site. ``guard_separate``
refuses such a setup before anything is created.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session, sessionmaker

from sidecar.dbpool import NO_BLIND_RESET, ping_when_idle, roll_back_open_transactions

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "mls_alembic_version"


class StoreError(Exception):
    """The store cannot be used as configured."""


def create_store_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    kwargs: dict = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Web threads, the scheduler and the outbox worker share the file: wait instead of failing.
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    elif parsed.get_backend_name() == "mysql":
        kwargs["pool_recycle"] = 3600
        kwargs.update(NO_BLIND_RESET)
        if "charset" not in parsed.query:
            url = parsed.update_query_dict({"charset": "utf8mb4"}).render_as_string(hide_password=False)
    engine = sa.create_engine(url, **kwargs)
    ping_when_idle(engine, "store")
    if engine.dialect.name == "mysql":
        roll_back_open_transactions(engine)
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs the log at checkpoints instead of at every commit (about 1 ms each on
            # a disk, the ceiling of the grant intake otherwise). The file stays consistent whatever happens,
            # and a commit survives a crash of any process of ours; only a power cut or a kernel crash can
            # roll back the last commits before the next checkpoint (SQLite's documented WAL trade-off).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
    return engine


class SqliteWriteGate:
    """One short write transaction at a time on a SQLite file, across this process's threads and the
    other processes that use the same file.

    SQLite itself lets one writer in and makes the others retry with sleeps that grow up to 100 ms
    (its busy handler): under a burst of grant posts the sleepers, not the writes, set the latency.
    Writers that queue here instead are woken the moment the previous one is done: a thread lock
    orders this process's threads, an ``flock`` on ``<database>.write-lock`` the processes (gunicorn
    workers, the outbox worker). The gate only orders writers; SQLite's own locking still decides.
    """

    def __init__(self, database: str) -> None:
        self.path = database + ".write-lock"
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _descriptor(self) -> int | None:
        if self._fd is None or self._pid != os.getpid():  # a forked child needs a description of its own
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                # The store's directory is gone or read-only: the transaction will fail on the database
                # itself, with the store's own error (answered as "store unavailable"), not on this file.
                return None
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._threads:
            descriptor = self._descriptor()
            if descriptor is None:
                yield
                return
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)


_GATES: dict[str, SqliteWriteGate] = {}
_GATES_LOCK = threading.Lock()


def write_gate(engine: sa.Engine) -> AbstractContextManager[None]:
    """A context that orders short write transactions on ``engine``'s store (SQLite files only; other
    databases lock rows, and an in-memory database has one connection)."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    database = engine.url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return nullcontext()
    gate = _GATES.get(database)
    if gate is None:
        resolved = str(Path(database).expanduser().resolve())
        with _GATES_LOCK:
            # One gate per file however its URL spells the path (threads of one process must share it).
            gate = _GATES.setdefault(resolved, _GATES.get(resolved) or SqliteWriteGate(resolved))
            _GATES[database] = gate
    return gate()


def _server_identity(url: sa.URL) -> tuple:
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        return ("sqlite", str(Path(database).expanduser().resolve()) if database not in ("", ":memory:") else id(url))
    return (backend, (url.host or "localhost").lower(), url.port or {"mysql": 3306, "postgresql": 5432}.get(backend),
            (url.database or "").lower())


def guard_separate(store_url: str, wordpress_url: str, store_engine: sa.Engine, table_prefix: str) -> None:
    """Refuse a store that is, or looks like, the WordPress database."""
    if _server_identity(sa.make_url(store_url)) == _server_identity(sa.make_url(wordpress_url)):
        raise StoreError("store.url points at the WordPress database; give the store a database of its own "
                         "(a SQLite file, or a separate MariaDB/PostgreSQL database)")
    names = set(sa.inspect(store_engine).get_table_names())
    wordpress_like = {f"{table_prefix}options", f"{table_prefix}memberlux_term_keys"} & names
    if wordpress_like or any(n.endswith("memberlux_term_keys") for n in names):
        found = sorted(wordpress_like or {n for n in names if n.endswith('memberlux_term_keys')})
        raise StoreError(f"store.url database contains WordPress tables ({', '.join(found)}); "
                         "the store must live in a database of its own")


def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, future=True)


def connection_of(target: Session | sa.Connection) -> sa.Connection:
    """The connection of a session's transaction, or the connection itself: for writers that take either."""
    return target.connection() if isinstance(target, Session) else target


#: MySQL/MariaDB errors after which the server has rolled the whole transaction back because of another
#: transaction, not because of anything in it: a deadlock (1213), a lock wait timeout (1205), and the
#: AUTO-INC lock of a deadlocked statement (1467, "Failed to read auto-increment value from storage engine").
_CONTENTION_CODES = frozenset({1205, 1213, 1467})


def rolled_back_by_contention(exc: BaseException) -> bool:
    """Whether ``exc`` is a transaction the server gave up because of a concurrent one: running the same
    transaction again is the remedy (nothing of it was written)."""
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    code = getattr(exc.orig, "args", (None,))[0]
    return code in _CONTENTION_CODES or "deadlock" in str(exc.orig).lower()


#: How often :func:`run_transaction` runs again a transaction the server rolled back for contention, and
#: the pause before each new run (times the run's number).
CONTENTION_RETRIES = 4
CONTENTION_PAUSE_SECONDS = 0.02


def run_transaction(factory: sessionmaker[Session], work: Callable[[Session], _T], what: str) -> _T:
    """``work(session)`` in one committed transaction; run again when MariaDB rolled it back because of a
    concurrent transaction (:func:`rolled_back_by_contention`: nothing of it was written), up to
    ``CONTENTION_RETRIES`` more times. For bookkeeping that must not wait for a lease to expire because it
    lost a race (a worker recording what a remote side answered). Any other error goes to the caller;
    ``what`` names the transaction in the log line of a retry."""
    for tries_left in range(CONTENTION_RETRIES, -1, -1):
        try:
            with unit_of_work(factory) as session:
                return work(session)
        except sa.exc.OperationalError as exc:
            if not tries_left or not rolled_back_by_contention(exc):
                raise
            log.info("the store rolled back %s (%s); running it again", what, exc.orig)
            time.sleep(CONTENTION_PAUSE_SECONDS * (CONTENTION_RETRIES - tries_left + 1))
    raise AssertionError("unreachable")


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success and rolled back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _alembic_config(engine: sa.Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


@functools.cache
def head_revision() -> str:
    """The newest migration shipped with this package (read once: loading the scripts takes tens of ms)."""
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def is_current(engine: sa.Engine) -> bool:
    return current_revision(engine) == head_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    command.upgrade(_alembic_config(engine), revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    command.downgrade(_alembic_config(engine), revision)
