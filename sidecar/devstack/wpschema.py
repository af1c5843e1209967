"""The WordPress + MemberLux schema as a real site has it, for the emulator and for tests.

Column names, types, defaults and charsets follow ``core.md`` section 1 (MemberLux 2.97 and its
modules) and stock WordPress. The sidecar itself never uses these definitions: it reflects whatever
the live database has (``sidecar.memberlux.schema``). Only the emulator and test fixtures create
tables from here, so a drift between this file and a real site shows up as a failing reader test,
not as a silently matching pair of assumptions.

On SQLite the MySQL-only types degrade to their closest affinity (ENUM -> TEXT, unsigned BIGINT ->
INTEGER so that AUTOINCREMENT keys still work); zero dates are stored as the text ``0000-00-00``
exactly as MySQL hands them to PyMySQL.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

ZERO_DATE = "0000-00-00"
ZERO_DATETIME = "0000-00-00 00:00:00"

# MemberLux creates its key tables with the legacy utf8 (utf8mb3) charset while WordPress 4.2+
# tables are utf8mb4: joins across the two must not depend on string comparisons.
_UTF8MB3 = {"mysql_charset": "utf8mb3", "mysql_collate": "utf8mb3_unicode_ci", "mysql_engine": "InnoDB"}
_UTF8MB4 = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_520_ci", "mysql_engine": "InnoDB"}


def _pk_bigint_unsigned() -> sa.types.TypeEngine:
    # SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
    return mysql.BIGINT(20, unsigned=True).with_variant(sa.Integer(), "sqlite")


def _pk_int() -> sa.types.TypeEngine:
    return mysql.INTEGER(11).with_variant(sa.Integer(), "sqlite")


def _bigint(unsigned: bool = False, width: int = 20) -> sa.types.TypeEngine:
    return mysql.BIGINT(width, unsigned=unsigned).with_variant(sa.BigInteger(), "sqlite")


def _enum(*values: str) -> sa.types.TypeEngine:
    return mysql.ENUM(*values).with_variant(sa.String(32), "sqlite")


def _tinyint() -> sa.types.TypeEngine:
    return mysql.TINYINT(1).with_variant(sa.SmallInteger(), "sqlite")


def _longtext() -> sa.types.TypeEngine:
    return mysql.LONGTEXT().with_variant(sa.Text(), "sqlite")


def _date() -> sa.types.TypeEngine:
    # Stored as text on SQLite so that '0000-00-00' survives exactly as on MySQL.
    return sa.Date().with_variant(sa.String(10), "sqlite")


def _datetime() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(sa.String(19), "sqlite")


@functools.lru_cache(maxsize=32)
def build_metadata(prefix: str = "wp_", base_prefix: str | None = None) -> sa.MetaData:
    """All tables of a WordPress site with MemberLux and its modules, under the given prefixes.

    ``base_prefix`` is the multisite network prefix used by ``users``/``usermeta``; it defaults to
    ``prefix`` (single site). Built once per pair of prefixes and shared (every emulated site and seed
    asks for it): callers read it and create or drop its tables, and never change it.
    """
    base = base_prefix or prefix
    md = sa.MetaData()

    # --- WordPress core -----------------------------------------------------------------------
    sa.Table(
        f"{base}users", md,
        sa.Column("ID", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("user_login", sa.String(60), nullable=False, server_default=""),
        sa.Column("user_pass", sa.String(255), nullable=False, server_default=""),
        sa.Column("user_nicename", sa.String(50), nullable=False, server_default=""),
        sa.Column("user_email", sa.String(100), nullable=False, server_default=""),
        sa.Column("user_url", sa.String(100), nullable=False, server_default=""),
        sa.Column("user_registered", _datetime(), nullable=False, server_default=ZERO_DATETIME),
        sa.Column("user_activation_key", sa.String(255), nullable=False, server_default=""),
        sa.Column("user_status", mysql.INTEGER(11).with_variant(sa.Integer(), "sqlite"), nullable=False, server_default="0"),
        sa.Column("display_name", sa.String(250), nullable=False, server_default=""),
        sa.Index("user_login_key", "user_login"),
        sa.Index("user_nicename", "user_nicename"),
        sa.Index("user_email", "user_email"),
        **_UTF8MB4,
    )
    sa.Table(
        f"{base}usermeta", md,
        sa.Column("umeta_id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("user_id", _bigint(unsigned=True), nullable=False, server_default="0"),
        sa.Column("meta_key", sa.String(255), nullable=True),
        sa.Column("meta_value", _longtext(), nullable=True),
        sa.Index(f"{base}usermeta_user_id", "user_id"),
        sa.Index(f"{base}usermeta_meta_key", "meta_key", mysql_length=191),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}options", md,
        sa.Column("option_id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("option_name", sa.String(191), nullable=False, server_default=""),
        sa.Column("option_value", _longtext(), nullable=False),
        sa.Column("autoload", sa.String(20), nullable=False, server_default="yes"),
        sa.UniqueConstraint("option_name", name="option_name"),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}terms", md,
        sa.Column("term_id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("slug", sa.String(200), nullable=False, server_default=""),
        sa.Column("term_group", mysql.BIGINT(10).with_variant(sa.BigInteger(), "sqlite"), nullable=False, server_default="0"),
        sa.Index(f"{prefix}terms_slug", "slug"),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}term_taxonomy", md,
        sa.Column("term_taxonomy_id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("term_id", _bigint(unsigned=True), nullable=False, server_default="0"),
        sa.Column("taxonomy", sa.String(32), nullable=False, server_default=""),
        sa.Column("description", _longtext(), nullable=False),
        sa.Column("parent", _bigint(unsigned=True), nullable=False, server_default="0"),
        sa.Column("count", _bigint(), nullable=False, server_default="0"),
        # Added by MemberLux core to a WordPress table (core.md 1.1).
        sa.Column("custom_order", mysql.INTEGER(11).with_variant(sa.Integer(), "sqlite"), nullable=False, server_default="9999"),
        sa.UniqueConstraint("term_id", "taxonomy", name="term_id_taxonomy"),
        sa.Index(f"{prefix}term_taxonomy_taxonomy", "taxonomy"),
        sa.Index(f"{prefix}custom_order_index", "custom_order"),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}termmeta", md,
        sa.Column("meta_id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("term_id", _bigint(unsigned=True), nullable=False, server_default="0"),
        sa.Column("meta_key", sa.String(255), nullable=True),
        sa.Column("meta_value", _longtext(), nullable=True),
        sa.Index(f"{prefix}termmeta_term_id", "term_id"),
        sa.Index(f"{prefix}termmeta_meta_key", "meta_key", mysql_length=191),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}term_relationships", md,
        sa.Column("object_id", _bigint(unsigned=True), primary_key=True, server_default="0"),
        sa.Column("term_taxonomy_id", _bigint(unsigned=True), primary_key=True, server_default="0"),
        sa.Column("term_order", mysql.INTEGER(11).with_variant(sa.Integer(), "sqlite"), nullable=False, server_default="0"),
        sa.Index(f"{prefix}term_relationships_tt", "term_taxonomy_id"),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}posts", md,
        sa.Column("ID", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("post_author", _bigint(unsigned=True), nullable=False, server_default="0"),
        sa.Column("post_date", _datetime(), nullable=False, server_default=ZERO_DATETIME),
        sa.Column("post_date_gmt", _datetime(), nullable=False, server_default=ZERO_DATETIME),
        sa.Column("post_content", _longtext(), nullable=False),
        sa.Column("post_title", sa.Text(), nullable=False),
        sa.Column("post_excerpt", sa.Text(), nullable=False),
        sa.Column("post_status", sa.String(20), nullable=False, server_default="publish"),
        sa.Column("post_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("post_modified", _datetime(), nullable=False, server_default=ZERO_DATETIME),
        sa.Column("post_modified_gmt", _datetime(), nullable=False, server_default=ZERO_DATETIME),
        sa.Column("post_parent", _bigint(unsigned=True), nullable=False, server_default="0"),
        sa.Column("guid", sa.String(255), nullable=False, server_default=""),
        sa.Column("post_type", sa.String(20), nullable=False, server_default="post"),
        sa.Index(f"{prefix}posts_type_status_date", "post_type", "post_status", "post_date", "ID"),
        sa.Index(f"{prefix}posts_post_parent", "post_parent"),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}postmeta", md,
        sa.Column("meta_id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("post_id", _bigint(unsigned=True), nullable=False, server_default="0"),
        sa.Column("meta_key", sa.String(255), nullable=True),
        sa.Column("meta_value", _longtext(), nullable=True),
        sa.Index(f"{prefix}postmeta_post_id", "post_id"),
        sa.Index(f"{prefix}postmeta_meta_key", "meta_key", mysql_length=191),
        **_UTF8MB4,
    )

    # --- WooCommerce (only what the order endpoint and product lookup touch) ----------------
    sa.Table(
        f"{prefix}woocommerce_order_items", md,
        sa.Column("order_item_id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("order_item_name", sa.Text(), nullable=False),
        sa.Column("order_item_type", sa.String(200), nullable=False, server_default=""),
        sa.Column("order_id", _bigint(unsigned=True), nullable=False),
        sa.Index(f"{prefix}woocommerce_order_items_order_id", "order_id"),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}woocommerce_order_itemmeta", md,
        sa.Column("meta_id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("order_item_id", _bigint(unsigned=True), nullable=False),
        sa.Column("meta_key", sa.String(255), nullable=True),
        sa.Column("meta_value", _longtext(), nullable=True),
        sa.Index(f"{prefix}woocommerce_order_itemmeta_item", "order_item_id"),
        **_UTF8MB4,
    )

    # --- MemberLux core (core.md 1.3 - 1.6) ----------------------------------------------------
    sa.Table(
        f"{prefix}memberlux_term_keys", md,
        sa.Column("id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("term_id", mysql.BIGINT(11).with_variant(sa.BigInteger(), "sqlite"), nullable=True),
        sa.Column("user_id", mysql.BIGINT(11).with_variant(sa.BigInteger(), "sqlite"), nullable=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("key_type", _enum("wpm_term_keys", "wpm_keys_basket"), nullable=True, server_default="wpm_term_keys"),
        sa.Column("status", _enum("new", "used", "expired"), nullable=True, server_default="new"),
        sa.Column("sent", _tinyint(), nullable=True, server_default="0"),
        sa.Column("is_banned", _tinyint(), nullable=True, server_default="0"),
        sa.Column("duration", mysql.BIGINT(11).with_variant(sa.BigInteger(), "sqlite"), nullable=False),
        sa.Column("units", sa.String(50), nullable=False, server_default="months"),
        sa.Column("date_start", _date(), nullable=False, server_default=ZERO_DATE),
        sa.Column("date_end", _date(), nullable=False, server_default=ZERO_DATE),
        sa.Column("date_registered", _date(), nullable=True),
        sa.Column("info", _longtext(), nullable=True),
        sa.Column("created_at", mysql.TIMESTAMP().with_variant(sa.String(19), "sqlite"), nullable=True),
        sa.Column("is_unlimited", _tinyint(), nullable=False, server_default="0"),
        sa.Index("memberlux_term_keys_key_idx", "key"),
        sa.Index("memberlux_term_keys_key_type_idx", "key_type"),
        sa.Index("memberlux_term_keys_date_start_idx", "date_start"),
        sa.Index("memberlux_term_keys_date_end_idx", "date_end"),
        sa.Index("memberlux_term_keys_duration_idx", "duration"),
        sa.Index("memberlux_term_keys_user_id_idx", "user_id"),
        sa.Index("memberlux_term_keys_term_id_idx", "term_id"),
        sa.Index("memberlux_term_keys_status_idx", "status"),
        sa.Index("memberlux_term_keys_is_banned_idx", "is_banned"),
        **_UTF8MB3,
    )
    sa.Table(
        f"{prefix}memberlux_keys_meta", md,
        sa.Column("key_id", mysql.BIGINT(20, unsigned=True).with_variant(sa.BigInteger(), "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("activation_datetime", _datetime(), nullable=False),
        sa.Column("source", sa.String(100), nullable=True),
        *(sa.Column(name, sa.String(60), nullable=True) for name in (
            "utm_source", "utm_medium", "utm_campaign", "utm_id", "utm_term", "utm_content")),
        **_UTF8MB3,
    )
    sa.Table(
        f"{prefix}memberlux_auto_auth", md,
        sa.Column("id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("user_id", _bigint(), nullable=False),
        sa.Column("secret", sa.String(255), nullable=False),
        **_UTF8MB3,
    )

    # --- mbl-api (core.md 1.7) -------------------------------------------------------------------
    sa.Table(
        f"{prefix}memberlux_hook", md,
        sa.Column("id", _pk_int(), primary_key=True, autoincrement=True),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("sort", mysql.MEDIUMINT(9).with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", _datetime(), nullable=True, server_default=sa.func.current_timestamp()),
        sa.Column("active", _tinyint(), nullable=False, server_default="1"),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}memberlux_hook_action", md,
        sa.Column("hook_id", mysql.INTEGER(11).with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("action", sa.String(191), primary_key=True),
        **_UTF8MB4,
    )

    # --- mbl-certificates (core.md 1.8) ----------------------------------------------------------
    sa.Table(
        f"{prefix}memberlux_certificate", md,
        sa.Column("certificate_id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("user_id", _bigint(unsigned=True), nullable=False),
        sa.Column("wpmlevel_id", _bigint(unsigned=True), nullable=False),
        sa.Column("certificate_name", sa.String(100), nullable=False),
        sa.Column("certificate_template_id", _bigint(unsigned=True), nullable=False),
        sa.Column("graduate_first_name", sa.String(60), server_default=""),
        sa.Column("graduate_last_name", sa.String(60), server_default=""),
        sa.Column("graduate_surname", sa.String(60), server_default=""),
        sa.Column("date_issue", _date(), nullable=False),
        sa.Column("series", sa.String(20), nullable=False),
        sa.Column("number", sa.String(20), nullable=False),
        sa.Column("responsible_person", _bigint(), nullable=True),
        sa.Column("create_date", _date(), nullable=False),
        sa.Column("course_name", sa.String(256), server_default=""),
        sa.Column("custom_fields", sa.Text(), nullable=True),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}memberlux_certificate_templates", md,
        sa.Column("certificate_template_id", mysql.INTEGER(11, unsigned=True).with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("content", _longtext(), nullable=False),
        sa.Column("orientation", _enum("vertical", "horizontal"), nullable=False, server_default="vertical"),
        **_UTF8MB4,
    )

    # --- mbl-auto-responder (core.md 1.9) --------------------------------------------------------
    sa.Table(
        f"{prefix}memberlux_mailing", md,
        sa.Column("id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("term_id", _bigint(unsigned=True), nullable=False),
        sa.Column("mail_order", mysql.INTEGER(11).with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("days", sa.Integer()), sa.Column("hour", sa.Integer()), sa.Column("minute", sa.Integer()),
        sa.Column("interval_type", _enum("interval", "day_of_the_week"), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False, server_default=""),
        sa.Column("message", _longtext(), nullable=False),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}memberlux_mailing_templates", md,
        sa.Column("id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256)),
        sa.Column("data", _longtext()),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}memberlux_mailing_list", md,
        sa.Column("term_id", mysql.BIGINT(20, unsigned=True).with_variant(sa.BigInteger(), "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("is_on", _tinyint(), nullable=False),
        sa.Column("datetime", _datetime(), nullable=False),
        sa.Column("template_id", _bigint(), nullable=False),
        sa.Column("unsubscribe", _tinyint(), nullable=False),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}memberlux_user_mailing_list", md,
        sa.Column("user_id", mysql.BIGINT(20, unsigned=True).with_variant(sa.BigInteger(), "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("term_id", mysql.BIGINT(20, unsigned=True).with_variant(sa.BigInteger(), "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("mailing_datetime", _datetime(), primary_key=True),
        sa.Column("datetime_start", _datetime()),
        sa.Column("status", _enum("processing", "unsubscribe", "finish", "disabled"), nullable=False),
        **_UTF8MB4,
    )
    sa.Table(
        f"{prefix}memberlux_mailing_results", md,
        sa.Column("id", _pk_bigint_unsigned(), primary_key=True, autoincrement=True),
        sa.Column("user_id", _bigint(unsigned=True)), sa.Column("term_id", _bigint(unsigned=True)),
        sa.Column("m_id", _bigint(unsigned=True)), sa.Column("mail_order", sa.Integer()),
        sa.Column("datetime", _datetime()), sa.Column("mailing_datetime", _datetime()),
        sa.Column("subject", sa.String(256)), sa.Column("message", _longtext()),
        sa.Index(f"{prefix}memberlux_mailing_results_user_id", "user_id"),
        **_UTF8MB4,
    )
    return md


#: Tables created by optional modules, grouped by module: a site without the module lacks them.
OPTIONAL_MODULE_TABLES: dict[str, tuple[str, ...]] = {
    "certificates": ("memberlux_certificate", "memberlux_certificate_templates"),
    "webhooks": ("memberlux_hook", "memberlux_hook_action"),
    "auto_responder": ("memberlux_mailing", "memberlux_mailing_templates", "memberlux_mailing_list",
                       "memberlux_user_mailing_list", "memberlux_mailing_results"),
    "woocommerce": ("woocommerce_order_items", "woocommerce_order_itemmeta"),
}


def create_site_schema(engine: sa.Engine, prefix: str = "wp_", base_prefix: str | None = None,
                       *, without_modules: tuple[str, ...] = ()) -> sa.MetaData:
    """Create every table of a site (minus the named optional modules) and return the metadata."""
    md = build_metadata(prefix, base_prefix)
    skipped = {prefix + name for module in without_modules for name in OPTIONAL_MODULE_TABLES[module]}
    tables = [t for t in md.sorted_tables if t.name not in skipped]
    with engine.begin() as conn:
        if conn.dialect.name == "mysql":
            # WordPress removes the strict and zero-date modes from every connection it opens.
            conn.exec_driver_sql("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")
        md.create_all(conn, tables=tables)
    return md
