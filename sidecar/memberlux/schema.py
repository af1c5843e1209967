"""Read-only access to the WordPress database: engine, table reflection, feature detection.

This is the one place that knows the table prefixes. Tables are reflected from the live database
rather than declared, because MemberLux creates them through ``dbDelta`` (which never drops old
columns) and its modules create them only when installed.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from sidecar.dbpool import NO_BLIND_RESET, ping_when_idle, roll_back_open_transactions

from sidecar.memberlux.wpdata import WpDataError, maybe_unserialize, php_truthy

__all__ = [
    "WordPressConnectionError",
    "MissingTableError",
    "LegacyKeyStorageError",
    "FeatureUnavailable",
    "REQUIRED_BASE_TABLES",
    "REQUIRED_SITE_TABLES",
    "OPTIONAL_MODULE_TABLES",
    "LenientDate",
    "LenientDateTime",
    "parse_date",
    "parse_datetime",
    "cannot_store",
    "SiteSchema",
    "connect_wordpress",
    "reflect_site",
]

log = logging.getLogger(__name__)


class WordPressConnectionError(Exception):
    """The WordPress database URL cannot be used (unsupported dialect, missing file...)."""


class MissingTableError(Exception):
    """A table the sidecar cannot work without is absent."""


class LegacyKeyStorageError(Exception):
    """MemberLux still keeps access keys in ``wp_options``; the table would show an incomplete picture."""


class FeatureUnavailable(Exception):
    """The optional MemberLux module behind a query is not installed on this site."""


#: Tables under the base (network) prefix: shared by every site of a multisite network.
REQUIRED_BASE_TABLES: tuple[str, ...] = ("users", "usermeta")
#: Tables under the site prefix.
REQUIRED_SITE_TABLES: tuple[str, ...] = (
    "options", "terms", "term_taxonomy", "termmeta", "term_relationships", "posts", "postmeta",
    "memberlux_term_keys", "memberlux_keys_meta",
)
#: Tables of optional modules (site prefix). A module counts as present only with all its tables.
OPTIONAL_MODULE_TABLES: dict[str, tuple[str, ...]] = {
    "certificates": ("memberlux_certificate", "memberlux_certificate_templates"),
    "webhooks": ("memberlux_hook", "memberlux_hook_action"),
    "auto_responder": ("memberlux_mailing", "memberlux_mailing_templates", "memberlux_mailing_list",
                       "memberlux_user_mailing_list", "memberlux_mailing_results"),
    "woocommerce": ("woocommerce_order_items", "woocommerce_order_itemmeta"),
}
#: Single tables read when present and never missed: WooCommerce >= 8.2 "High-Performance Order
#: Storage" (used only when the site switched it on; most sites keep orders in posts).
OPTIONAL_TABLES: tuple[str, ...] = ("wc_orders",)

_MODULE_CONSEQUENCES: dict[str, tuple[str, str]] = {
    "certificates": ("Certificates module", "manual-certificate checks are disabled"),
    "webhooks": ("API & webhooks module", "webhook configuration checks are disabled"),
    "auto_responder": ("Auto-responder module", "auto-responder sequences are not shown"),
    "woocommerce": ("WooCommerce", "order look-ups are disabled"),
}

_MODULE_OF = {short: module for module, shorts in OPTIONAL_MODULE_TABLES.items() for short in shorts}

_LEGACY_FLAG = "wpm_has_to_update_term_keys"


# --------------------------------------------------------------------------------------------------
# Lenient temporal types


def parse_date(value: Any) -> date | None:
    """A ``date`` from whatever the driver returned; ``None`` for zero, empty or unparseable values."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value).strip()
    if not text or text.startswith("0000"):
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def parse_datetime(value: Any) -> datetime | None:
    """A naive ``datetime`` as stored; ``None`` for zero, empty or unparseable values."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value).strip()
    if not text or text.startswith("0000"):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


class LenientDate(sa.types.TypeDecorator[date]):
    """DATE that tolerates MySQL zero dates.

    The impl is a string type so that no driver-level date parser (SQLite's in particular) sees
    ``'0000-00-00'``; PyMySQL already hands zero dates over as that string, mixed with ``date``s.
    """

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if isinstance(value, datetime):
            return value.date().isoformat()
        if isinstance(value, date):
            return value.isoformat()
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> date | None:
        return parse_date(value)


class LenientDateTime(sa.types.TypeDecorator[datetime]):
    """DATETIME/TIMESTAMP counterpart of :class:`LenientDate`."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if isinstance(value, datetime):
            return value.replace(tzinfo=None).isoformat(sep=" ")
        if isinstance(value, date):
            return f"{value.isoformat()} 00:00:00"
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        return parse_datetime(value)


# Temporal columns named in the MemberLux reference. SQLite has no real date type (a file made by
# the devstack or by the WordPress SQLite plugin declares them as text), so these columns get the
# lenient types by name whenever reflection shows a string type.
_KNOWN_TEMPORAL: dict[str, dict[str, type[LenientDate] | type[LenientDateTime]]] = {
    "memberlux_term_keys": {"date_start": LenientDate, "date_end": LenientDate,
                            "date_registered": LenientDate, "created_at": LenientDateTime},
    "memberlux_keys_meta": {"activation_datetime": LenientDateTime},
    "memberlux_certificate": {"date_issue": LenientDate, "create_date": LenientDate},
    "users": {"user_registered": LenientDateTime},
}


def _lenient_type(column_type: sa.types.TypeEngine[Any], short_table: str | None,
                  column: str) -> type[LenientDate] | type[LenientDateTime] | None:
    if isinstance(column_type, sa.DateTime):  # includes TIMESTAMP
        return LenientDateTime
    if isinstance(column_type, sa.Date):
        return LenientDate
    if isinstance(column_type, sa.String) and short_table is not None:
        return _KNOWN_TEMPORAL.get(short_table, {}).get(column)
    return None


def cannot_store(column: sa.Column[Any], value: str) -> bool:
    """True when ``value`` can never equal anything in ``column``.

    MemberLux's own tables use the 3-byte ``utf8`` charset, which holds no character beyond U+FFFF
    (emoji); MySQL refuses to even compare such a column with a 4-byte string ("Illegal mix of
    collations"), so a look-up for such a value is answered without asking the server.
    """
    charset = getattr(column.type, "charset", None) or column.table.dialect_kwargs.get("mysql_default charset")
    if str(charset or "").lower() not in ("utf8", "utf8mb3"):
        return False
    return any(ord(ch) > 0xFFFF for ch in value)


# --------------------------------------------------------------------------------------------------
# Engine


def _sqlite_path(url: sa.URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise WordPressConnectionError("a SQLite WordPress database must be a file, not in-memory")
    path = Path(url.database).expanduser().resolve()
    if not path.is_file():
        raise WordPressConnectionError(f"SQLite WordPress database not found: {path}")
    return path


def _sqlite_creator(path: Path) -> Callable[[], sqlite3.Connection]:
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        # Python-side casefold: SQLite's own lower() only folds ASCII, and e-mails can be Cyrillic.
        conn.create_function("casefold", 1, lambda s: s.casefold() if isinstance(s, str) else s,
                             deterministic=True)
        return conn

    return connect


def connect_wordpress(url: str, *, connect_timeout: int = 5, pool_size: int = 5) -> sa.Engine:
    """An engine on the WordPress database that the database itself keeps read-only.

    MySQL/MariaDB: every new connection runs ``SET SESSION TRANSACTION READ ONLY``.
    SQLite: the file is opened with ``mode=ro`` and ``PRAGMA query_only=ON``.
    Still, grant the sidecar a SELECT-only account (``sql/readonly-user.sql``).
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise WordPressConnectionError(f"invalid WordPress database URL: {exc}") from exc
    backend = parsed.get_backend_name()

    if backend in ("mysql", "mariadb"):
        if parsed.drivername == backend:  # no driver named: use the one we ship
            parsed = parsed.set(drivername=f"{backend}+pymysql")
        engine = sa.create_engine(
            parsed, pool_size=pool_size, pool_recycle=3600, **NO_BLIND_RESET,
            connect_args={"connect_timeout": connect_timeout, "charset": "utf8mb4"},
        )
        ping_when_idle(engine, "WordPress database")
        roll_back_open_transactions(engine)

        @event.listens_for(engine, "connect")
        def _read_only_session(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("SET SESSION TRANSACTION READ ONLY")
            finally:
                cursor.close()

        return engine

    if backend == "sqlite":
        path = _sqlite_path(parsed)
        engine = sa.create_engine("sqlite://", creator=_sqlite_creator(path), pool_pre_ping=True,
                                  poolclass=sa.pool.QueuePool, pool_size=pool_size)

        @event.listens_for(engine, "connect")
        def _query_only(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA query_only = ON")

        return engine

    raise WordPressConnectionError(
        f"unsupported database {backend!r} for WordPress: use a mysql+pymysql:// URL "
        "(or sqlite:/// for the demo site)"
    )


# --------------------------------------------------------------------------------------------------
# Reflection


@dataclass
class SiteSchema:
    """The reflected tables of one site, addressed by unprefixed names (``'users'``, ``'options'``)."""

    prefix: str
    base_prefix: str
    metadata: sa.MetaData
    tables: dict[str, sa.Table]
    features: dict[str, bool]
    notices: list[str] = field(default_factory=list)
    reflected_in_seconds: float = 0.0

    def has(self, short_name: str) -> bool:
        return short_name in self.tables

    def table(self, short_name: str) -> sa.Table:
        try:
            return self.tables[short_name]
        except KeyError:
            raise FeatureUnavailable(f"table {self.full_name(short_name)} is not available on this site") from None

    def full_name(self, short_name: str) -> str:
        base = short_name in REQUIRED_BASE_TABLES
        return (self.base_prefix if base else self.prefix) + short_name

    def require(self, feature: str) -> None:
        """Raise :class:`FeatureUnavailable` unless the optional module is installed."""
        if not self.features.get(feature, False):
            label = _MODULE_CONSEQUENCES.get(feature, (feature, ""))[0]
            raise FeatureUnavailable(f"{label} is not installed on this site (prefix {self.prefix!r})")


def _wanted_names(prefix: str, base: str) -> dict[str, str]:
    names = {short: base + short for short in REQUIRED_BASE_TABLES}
    names.update({short: prefix + short for short in REQUIRED_SITE_TABLES})
    for tables in OPTIONAL_MODULE_TABLES.values():
        names.update({short: prefix + short for short in tables})
    names.update({short: prefix + short for short in OPTIONAL_TABLES})
    return names


def _prefix_hint(existing: Iterable[str], short_name: str) -> str:
    candidates = sorted(name[: -len(short_name)] for name in existing if name.endswith(short_name))
    if candidates:
        found = ", ".join(repr(c) for c in candidates[:5])
        return f" A {short_name} table exists under the prefix {found}: is table_prefix set correctly?"
    return " Is table_prefix set to the site's $table_prefix from wp-config.php, and is MemberLux installed?"


def _actual_names(conn: sa.Connection, wanted: dict[str, str]) -> tuple[set[str], dict[str, str | None]]:
    """The tables that exist, and the real name of each wanted one (``None`` when absent)."""
    existing = set(sa.inspect(conn).get_table_names())
    # MySQL with lower_case_table_names=1 reports lower-cased names for a mixed-case prefix.
    by_lower = {name.lower(): name for name in existing}
    return existing, {short: by_lower.get(full.lower()) for short, full in wanted.items()}


def recheck_site_data(conn: sa.Connection, prefix: str, base_prefix: str | None = None) -> None:
    """The checks :func:`reflect_site` makes on the site's rows rather than its tables, for a caller
    that keeps a reflection of an unchanged schema: the same errors, for the same rows."""
    wanted = _wanted_names(prefix, base_prefix or prefix)
    _, actual = _actual_names(conn, wanted)
    if actual["options"] is not None:
        _check_legacy_storage(conn, actual["options"])
    _refuse_certificates_without_templates(conn, actual, wanted)


def _missing_tables_message(absent: list[str], wanted: dict[str, str], existing: Iterable[str],
                            prefix: str, base: str) -> str:
    """Every absent required table in one message: a site is fixed in one round, not one table per run."""
    names = ", ".join(wanted[short] for short in absent)
    where = f"prefix {prefix!r}" + (f", base prefix {base!r}" if base != prefix else "")
    noun = "table" if len(absent) == 1 else f"{len(absent)} tables"
    return f"Required {noun} not found ({where}): {names}." + _prefix_hint(existing, absent[0])


def _refuse_certificates_without_templates(conn: sa.Connection, actual: dict[str, str | None],
                                           wanted: dict[str, str]) -> None:
    """Certificates issued on the site but no templates table: a hard stop, not a disabled feature.

    Only a certificate's template says whether it was issued by hand, and the sleeper rule spares the
    holders of manual certificates. Without the templates every holder would be reported a sleeper and
    mailed reminders, so the sidecar refuses to run until the table is back (or the certificates gone).
    """
    certificates, templates = actual["memberlux_certificate"], actual["memberlux_certificate_templates"]
    if certificates is None or templates is not None:
        return
    issued = conn.execute(sa.select(sa.literal(1)).select_from(sa.table(certificates)).limit(1)).first()
    if issued is not None:
        raise MissingTableError(
            f"Table {wanted['memberlux_certificate_templates']} not found, but {certificates} holds issued "
            "certificates: without the templates a manual certificate cannot be told from an automatic one, "
            "so every certificate holder would be reported as a sleeper and mailed reminders. Restore the "
            "Certificates module's templates table (or check table_prefix) before running the sidecar.")


def _check_legacy_storage(conn: sa.Connection, options_table: str) -> None:
    options = sa.table(options_table, sa.column("option_name"), sa.column("option_value"))
    value = conn.execute(
        sa.select(options.c.option_value).where(options.c.option_name == _LEGACY_FLAG).limit(1)
    ).scalar()
    try:
        flag = maybe_unserialize(value)
    except WpDataError:
        flag = value  # a corrupt flag is still "set"
    if value is not None and php_truthy(flag):
        raise LegacyKeyStorageError(
            f"MemberLux has not finished migrating access keys out of {options_table} "
            f"(option {_LEGACY_FLAG!r} = {value!r}): keys may still live in wp_options rather than "
            "in the memberlux_term_keys table. The site administrator must finish MemberLux's "
            "term-key migration in the WordPress admin area before the sidecar can read access data."
        )


def _module_features(actual: dict[str, str | None], wanted: dict[str, str]) -> tuple[dict[str, bool], list[str]]:
    features: dict[str, bool] = {}
    notices: list[str] = []
    for module, shorts in OPTIONAL_MODULE_TABLES.items():
        missing = [wanted[s] for s in shorts if actual[s] is None]
        features[module] = not missing
        if missing:
            label, consequence = _MODULE_CONSEQUENCES[module]
            notices.append(f"{label} tables not found ({', '.join(missing)}): {consequence}.")
    return features, notices


def reflect_site(engine: sa.Engine, prefix: str, base_prefix: str | None = None) -> SiteSchema:
    """Reflect the tables the sidecar reads and work out which optional modules exist.

    Raises :class:`MissingTableError` for an absent required table and
    :class:`LegacyKeyStorageError` while MemberLux's key migration is unfinished.
    """
    started = time.perf_counter()
    base = base_prefix or prefix
    wanted = _wanted_names(prefix, base)
    with engine.connect() as conn:
        existing, actual = _actual_names(conn, wanted)

        # Checked first: during the migration a missing key table is expected, not a wrong prefix.
        if actual["options"] is not None:
            _check_legacy_storage(conn, actual["options"])
        absent = [short for short in (*REQUIRED_BASE_TABLES, *REQUIRED_SITE_TABLES) if actual[short] is None]
        if absent:
            raise MissingTableError(_missing_tables_message(absent, wanted, existing, prefix, base))

        features, notices = _module_features(actual, wanted)
        _refuse_certificates_without_templates(conn, actual, wanted)
        # A half-installed module is left out entirely, so no query can touch a lone table of it.
        present = {
            short: name for short, name in actual.items()
            if name is not None and (short not in _MODULE_OF or features[_MODULE_OF[short]])
        }
        short_of = {name: short for short, name in present.items()}
        metadata = sa.MetaData()

        @event.listens_for(metadata, "column_reflect")
        def _lenient_dates(_inspector: Any, table: sa.Table, column_info: Any) -> None:
            lenient = _lenient_type(column_info["type"], short_of.get(table.name), column_info["name"])
            if lenient is not None:
                column_info["type"] = lenient()

        metadata.reflect(bind=conn, only=sorted(present.values()))

    tables = {short: metadata.tables[name] for short, name in present.items()}
    elapsed = time.perf_counter() - started
    log.debug("Reflected %d WordPress tables (prefix %r, base %r) in %.3f s", len(tables), prefix, base, elapsed)
    for notice in notices:
        log.debug(notice)
    return SiteSchema(prefix=prefix, base_prefix=base, metadata=metadata, tables=tables,
                      features=features, notices=notices, reflected_in_seconds=elapsed)
