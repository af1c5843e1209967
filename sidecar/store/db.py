"""Engine, sessions and migrations of our store.

The store must never land inside the WordPress database by accident: a mistaken URL would mix our
tables with MemberLux's and, worse, give a write-capable connection to the site. ``guard_separate``
refuses such a setup before anything is created.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "mls_alembic_version"


class StoreError(Exception):
    """The store cannot be used as configured."""


def create_store_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    kwargs: dict = {"pool_pre_ping": True, "future": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Web threads, the scheduler and the outbox worker share the file: wait instead of failing.
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    elif parsed.get_backend_name() == "mysql":
        kwargs["pool_recycle"] = 3600
        if "charset" not in parsed.query:
            url = parsed.update_query_dict({"charset": "utf8mb4"}).render_as_string(hide_password=False)
    engine = sa.create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
    return engine


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
