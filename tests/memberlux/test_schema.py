"""Read-only engine and start-up reflection, on SQLite and MariaDB."""

from __future__ import annotations

from datetime import date, datetime

import pytest
import sqlalchemy as sa

from sidecar.devstack import wpschema
from tests.sites import empty_site_schema
from sidecar.memberlux import schema as mlschema
from sidecar.memberlux.schema import (
    FeatureUnavailable,
    LegacyKeyStorageError,
    LenientDate,
    LenientDateTime,
    MissingTableError,
    WordPressConnectionError,
    connect_wordpress,
    parse_date,
    parse_datetime,
    reflect_site,
)


@pytest.fixture
def writer(site_db_url):
    engine = sa.create_engine(site_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def open_engines():
    engines: list[sa.Engine] = []
    yield engines
    for engine in engines:
        engine.dispose()


@pytest.fixture
def connect(site_db_url, open_engines):
    def _connect() -> sa.Engine:
        engine = connect_wordpress(site_db_url)
        open_engines.append(engine)
        return engine

    return _connect


def _set_option(writer: sa.Engine, table: str, name: str, value: str) -> None:
    with writer.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} (option_name, option_value, autoload) VALUES (:n, :v, 'no')"),
                     {"n": name, "v": value})


# --- the engine is read-only by the database's own rules ------------------------------------------


def test_insert_through_reader_engine_fails(writer, connect):
    md = empty_site_schema(writer)
    engine = connect()
    keys = md.tables["wp_memberlux_term_keys"]
    with pytest.raises(sa.exc.DBAPIError):
        with engine.begin() as conn:
            conn.execute(keys.insert().values(term_id=1, key="x", duration=1))
    with writer.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(keys)).scalar() == 0


def test_update_through_reader_engine_fails(writer, connect):
    md = empty_site_schema(writer)
    options = md.tables["wp_options"]
    _set_option(writer, "wp_options", "blogname", "Before")
    engine = connect()
    with pytest.raises(sa.exc.DBAPIError):
        with engine.begin() as conn:
            conn.execute(options.update().values(option_value="After"))
    with writer.connect() as conn:
        assert conn.execute(sa.select(options.c.option_value)).scalar() == "Before"


def test_session_is_marked_read_only(writer, connect):
    empty_site_schema(writer)
    engine = connect()
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA query_only").scalar() == 1
        else:
            assert conn.exec_driver_sql("SELECT @@session.tx_read_only").scalar() == 1


def test_sqlite_file_is_opened_read_only_even_without_the_pragma(tmp_path):
    path = tmp_path / "wp.sqlite"
    empty_site_schema(sa.create_engine(f"sqlite:///{path}"))
    engine = connect_wordpress(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA query_only = OFF")
            with pytest.raises(sa.exc.OperationalError, match="readonly"):
                conn.exec_driver_sql("DELETE FROM wp_options")
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["postgresql://u@localhost/wp", "mssql+pyodbc://u@dsn"])
def test_other_dialects_are_rejected(url):
    with pytest.raises(WordPressConnectionError, match="unsupported database"):
        connect_wordpress(url)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_rejected(url):
    with pytest.raises(WordPressConnectionError, match="file"):
        connect_wordpress(url)


def test_missing_sqlite_file_is_rejected(tmp_path):
    with pytest.raises(WordPressConnectionError, match="not found"):
        connect_wordpress(f"sqlite:///{tmp_path / 'nope.sqlite'}")


def test_invalid_url_is_rejected():
    with pytest.raises(WordPressConnectionError):
        connect_wordpress("not a url")


# --- reflection -------------------------------------------------------------------------------------


def test_reflects_required_and_module_tables(writer, connect):
    empty_site_schema(writer)
    site = reflect_site(connect(), "wp_")
    assert site.prefix == site.base_prefix == "wp_"
    assert site.features == {"certificates": True, "webhooks": True, "auto_responder": True, "woocommerce": True}
    assert site.notices == []
    assert site.table("memberlux_term_keys").name == "wp_memberlux_term_keys"
    assert site.table("users").name == "wp_users"
    assert site.has("memberlux_certificate")
    assert isinstance(site.reflected_in_seconds, float)  # measured, never asserted on
    # Secrets are never even reflected.
    assert not site.has("memberlux_auto_auth")
    assert all("auto_auth" not in name for name in site.metadata.tables)


def test_date_columns_get_lenient_types(writer, connect):
    empty_site_schema(writer)
    site = reflect_site(connect(), "wp_")
    keys = site.table("memberlux_term_keys")
    for column in ("date_start", "date_end", "date_registered"):
        assert isinstance(keys.c[column].type, LenientDate), column
    assert isinstance(keys.c.created_at.type, LenientDateTime)
    assert isinstance(site.table("memberlux_keys_meta").c.activation_datetime.type, LenientDateTime)
    assert isinstance(site.table("memberlux_certificate").c.date_issue.type, LenientDate)
    assert isinstance(site.table("users").c.user_registered.type, LenientDateTime)


def test_extra_legacy_columns_are_tolerated(writer, connect):
    empty_site_schema(writer)
    with writer.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE wp_memberlux_certificate ADD COLUMN product_id BIGINT NULL")
    site = reflect_site(connect(), "wp_")
    assert "product_id" in site.table("memberlux_certificate").c


def test_custom_prefix(writer, connect):
    empty_site_schema(writer, "wpx_")
    site = reflect_site(connect(), "wpx_")
    assert site.table("memberlux_term_keys").name == "wpx_memberlux_term_keys"
    assert site.table("users").name == "wpx_users"


def test_wrong_prefix_names_table_and_suggests_the_real_one(writer, connect):
    empty_site_schema(writer, "wpx_")
    with pytest.raises(MissingTableError) as info:
        reflect_site(connect(), "wp_")
    message = str(info.value)
    assert "wp_users" in message
    assert "'wp_'" in message
    assert "'wpx_'" in message and "table_prefix" in message


def test_multisite_site_prefix_with_base_prefix(writer, connect):
    empty_site_schema(writer, "wp_3_", "wp_")
    site = reflect_site(connect(), "wp_3_", "wp_")
    assert (site.prefix, site.base_prefix) == ("wp_3_", "wp_")
    assert site.table("users").name == "wp_users"
    assert site.table("usermeta").name == "wp_usermeta"
    assert site.table("options").name == "wp_3_options"
    assert site.table("memberlux_term_keys").name == "wp_3_memberlux_term_keys"


def test_missing_required_table_is_named(writer, connect):
    md = empty_site_schema(writer)
    md.tables["wp_memberlux_keys_meta"].drop(writer)
    with pytest.raises(MissingTableError) as info:
        reflect_site(connect(), "wp_")
    assert "wp_memberlux_keys_meta" in str(info.value)
    assert "table_prefix" in str(info.value)


def test_every_missing_required_table_is_named_at_once(writer, connect):
    md = empty_site_schema(writer)
    for name in ("wp_memberlux_keys_meta", "wp_posts", "wp_postmeta"):
        md.tables[name].drop(writer)
    with pytest.raises(MissingTableError) as info:
        reflect_site(connect(), "wp_")
    assert "3 tables not found" in str(info.value)
    for name in ("wp_memberlux_keys_meta", "wp_posts", "wp_postmeta"):
        assert name in str(info.value)


def test_issued_certificates_without_templates_stop_the_reflection(writer, connect):
    md = empty_site_schema(writer)
    md.tables["wp_memberlux_certificate_templates"].drop(writer)
    with writer.begin() as conn:
        conn.execute(md.tables["wp_memberlux_certificate"].insert().values(
            certificate_id=1, user_id=5, wpmlevel_id=7, certificate_name="Yoga", certificate_template_id=3,
            date_issue=date(2026, 1, 5), create_date=date(2026, 1, 5), series="A", number="1"))
    with pytest.raises(MissingTableError) as info:
        reflect_site(connect(), "wp_")
    message = str(info.value)
    assert "wp_memberlux_certificate_templates not found" in message
    assert "wp_memberlux_certificate holds issued certificates" in message
    assert "reported as a sleeper" in message


def test_no_certificates_issued_and_no_templates_is_only_a_missing_module(writer, connect):
    md = empty_site_schema(writer)
    md.tables["wp_memberlux_certificate_templates"].drop(writer)
    site = reflect_site(connect(), "wp_")
    assert site.features["certificates"] is False
    assert any("manual-certificate checks are disabled" in notice for notice in site.notices)


def test_missing_optional_module_disables_feature_with_notice(writer, connect):
    empty_site_schema(writer, without_modules=("certificates", "woocommerce"))
    site = reflect_site(connect(), "wp_")
    assert site.features["certificates"] is False
    assert site.features["woocommerce"] is False
    assert site.features["webhooks"] is True
    assert not site.has("memberlux_certificate")
    assert (
        "Certificates module tables not found (wp_memberlux_certificate, wp_memberlux_certificate_templates): "
        "manual-certificate checks are disabled." in site.notices
    )
    assert any(n.startswith("WooCommerce tables not found") for n in site.notices)
    with pytest.raises(FeatureUnavailable):
        site.require("certificates")
    with pytest.raises(FeatureUnavailable, match="wp_memberlux_certificate"):
        site.table("memberlux_certificate")


def test_partially_installed_module_counts_as_missing(writer, connect):
    md = empty_site_schema(writer)
    md.tables["wp_memberlux_hook_action"].drop(writer)
    site = reflect_site(connect(), "wp_")
    assert site.features["webhooks"] is False
    assert not site.has("memberlux_hook")
    assert any("wp_memberlux_hook_action" in n for n in site.notices)


def test_unfinished_term_key_migration_is_refused(writer, connect):
    empty_site_schema(writer)
    _set_option(writer, "wp_options", "wpm_has_to_update_term_keys", "1")
    with pytest.raises(LegacyKeyStorageError, match="migration"):
        reflect_site(connect(), "wp_")


def test_unfinished_migration_wins_over_missing_key_table(writer, connect):
    md = empty_site_schema(writer)
    md.tables["wp_memberlux_keys_meta"].drop(writer)
    md.tables["wp_memberlux_term_keys"].drop(writer)
    _set_option(writer, "wp_options", "wpm_has_to_update_term_keys", "1")
    with pytest.raises(LegacyKeyStorageError):
        reflect_site(connect(), "wp_")


@pytest.mark.parametrize("value", ["", "0", "b:0;"])
def test_finished_migration_flag_is_fine(writer, connect, value):
    empty_site_schema(writer)
    _set_option(writer, "wp_options", "wpm_has_to_update_term_keys", value)
    assert reflect_site(connect(), "wp_").has("memberlux_term_keys")


def test_module_table_map_matches_devstack():
    assert mlschema.OPTIONAL_MODULE_TABLES == wpschema.OPTIONAL_MODULE_TABLES


def test_required_tables_exist_in_devstack_schema():
    names = set(wpschema.build_metadata("wp_").tables)
    for short in (*mlschema.REQUIRED_BASE_TABLES, *mlschema.REQUIRED_SITE_TABLES):
        assert "wp_" + short in names


# --- lenient temporal values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (None, None), ("", None), ("0000-00-00", None), (b"0000-00-00", None), ("2024-13-45", None),
        ("garbage", None), ("2024-02-29", date(2024, 2, 29)), (date(2024, 1, 2), date(2024, 1, 2)),
        (datetime(2024, 1, 2, 3, 4), date(2024, 1, 2)), ("2024-01-02 10:00:00", date(2024, 1, 2)),
    ],
)
def test_parse_date(raw, expected):
    assert parse_date(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        (None, None), ("0000-00-00 00:00:00", None), ("", None), ("nonsense", None),
        ("2024-01-02 03:04:05", datetime(2024, 1, 2, 3, 4, 5)),
        (datetime(2024, 1, 2, 3, 4, 5), datetime(2024, 1, 2, 3, 4, 5)),
        (date(2024, 1, 2), datetime(2024, 1, 2)),
    ],
)
def test_parse_datetime(raw, expected):
    assert parse_datetime(raw) == expected


def test_bind_params_are_iso_strings():
    dialect = sa.create_engine("sqlite://").dialect
    assert LenientDate().process_bind_param(date(2024, 1, 2), dialect) == "2024-01-02"
    assert LenientDate().process_bind_param(datetime(2024, 1, 2, 5), dialect) == "2024-01-02"
    assert LenientDateTime().process_bind_param(datetime(2024, 1, 2, 5, 6, 7), dialect) == "2024-01-02 05:06:07"
    assert LenientDateTime().process_bind_param(date(2024, 1, 2), dialect) == "2024-01-02 00:00:00"
    assert LenientDate().process_bind_param(None, dialect) is None
