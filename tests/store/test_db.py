"""Our store: migrations on every supported backend, and never inside the WordPress database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.sites import empty_site_schema
from sidecar.store import db as store_db


def _migrate_and_check(url: str) -> None:
    engine = store_db.create_store_engine(url)
    try:
        assert store_db.current_revision(engine) is None
        store_db.upgrade(engine)
        assert store_db.is_current(engine)
        tables = set(sa.inspect(engine).get_table_names())
        assert {"mls_audit_events", "mls_setting_overrides", "mls_job_leases", "mls_alembic_version"} <= tables
        store_db.downgrade(engine, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"mls_alembic_version"}
        store_db.upgrade(engine)
        assert store_db.is_current(engine)
    finally:
        engine.dispose()


def test_migrations_on_sqlite(tmp_path):
    _migrate_and_check(f"sqlite:///{tmp_path / 'nested' / 'store.sqlite'}")


@pytest.mark.mariadb
def test_migrations_on_mariadb(mariadb_database):
    _migrate_and_check(mariadb_database)


@pytest.mark.postgres
def test_migrations_on_postgresql(postgres_database):
    _migrate_and_check(postgres_database)


def test_store_url_equal_to_wordpress_url_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'same.sqlite'}"
    engine = store_db.create_store_engine(url)
    with pytest.raises(store_db.StoreError, match="points at the WordPress database"):
        store_db.guard_separate(url, f"sqlite:///{tmp_path}/./same.sqlite", engine, "wp_")


def test_same_mysql_database_with_other_user_is_refused():
    engine = sa.create_engine("sqlite://")
    with pytest.raises(store_db.StoreError, match="points at the WordPress database"):
        store_db.guard_separate("mysql+pymysql://store@DB.local/WordPress", "mysql+pymysql://ro@db.local:3306/wordpress",
                                engine, "wp_")


def test_store_database_holding_wordpress_tables_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    engine = sa.create_engine(url)
    empty_site_schema(engine, "wpx_")
    with pytest.raises(store_db.StoreError, match="wpx_memberlux_term_keys"):
        store_db.guard_separate(url, f"sqlite:///{tmp_path / 'wp.sqlite'}", engine, "wp_")


def test_separate_store_passes(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    engine = store_db.create_store_engine(url)
    store_db.guard_separate(url, f"sqlite:///{tmp_path / 'wp.sqlite'}", engine, "wp_")


def test_unit_of_work_rolls_back_on_error(tmp_path):
    from datetime import datetime, timezone

    from sidecar.store.models import AuditEvent

    engine = store_db.create_store_engine(f"sqlite:///{tmp_path / 's.sqlite'}")
    store_db.upgrade(engine)
    sessions = store_db.session_factory(engine)
    with pytest.raises(RuntimeError):
        with store_db.unit_of_work(sessions) as session:
            session.add(AuditEvent(occurred_at=datetime.now(timezone.utc), subject_type="t", subject_id="1",
                                   action="a", details={}))
            session.flush()
            raise RuntimeError("boom")
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 0


def test_naive_datetimes_are_refused(tmp_path):
    from datetime import datetime

    from sidecar.store.models import AuditEvent

    engine = store_db.create_store_engine(f"sqlite:///{tmp_path / 's.sqlite'}")
    store_db.upgrade(engine)
    with store_db.session_factory(engine)() as session:
        session.add(AuditEvent(occurred_at=datetime(2026, 1, 1), subject_type="t", subject_id="1", action="a", details={}))
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            session.flush()
