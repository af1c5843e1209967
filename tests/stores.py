"""Migrated stores for tests, fast: the real migrations run once per test process into a template file,
and every SQLite store a test asks for is a copy of it (a copy takes milliseconds, migrating a fresh
store a tenth of a second, and the suite makes hundreds). Other databases are migrated for real.
The migrations themselves are specified in ``tests/store``, which always runs them.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import sqlalchemy as sa

from sidecar.store import db as store_db

_template: Path | None = None
_lock = threading.Lock()


def _sqlite_template() -> Path:
    global _template
    with _lock:
        if _template is None:
            path = Path(tempfile.mkdtemp(prefix="mls-store-template-")) / "store.sqlite"
            engine = store_db.create_store_engine(f"sqlite:///{path}")
            try:
                store_db.upgrade(engine)
            finally:
                engine.dispose()
            _template = path
        return _template


def migrate_store(url: str) -> None:
    """Bring the (new, empty) store at ``url`` to the current schema."""
    parsed = sa.make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" and not Path(database).exists():
        shutil.copyfile(_sqlite_template(), database)
        return
    engine = store_db.create_store_engine(url)
    try:
        store_db.upgrade(engine)
    finally:
        engine.dispose()
