"""`mlsidecar doctor`: every dependency checked once, in the order an operator would fix them.

Each check returns OK, WARN or FAIL with a sentence that says what to do. Checks after a failed
prerequisite are reported as skipped rather than crashing with a cascade of secondary errors.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa

from sidecar.bootstrap import store_url, wordpress_url
from sidecar.clock import Clock
from sidecar.config import Settings
from sidecar.memberlux import wpdata
from sidecar.memberlux.payments import PAYMENTS_PLUGIN, plugin_names
from sidecar.memberlux.reader import MemberLuxReader
from sidecar.memberlux.rest import MemberLuxRestClient, RestError
from sidecar.memberlux.schema import (
    LegacyKeyStorageError,
    MissingTableError,
    SiteSchema,
    connect_wordpress,
    reflect_site,
)
from sidecar.jobs import HEARTBEAT_JOB
from sidecar.store import db as store_db
from sidecar.store import leases

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"

#: What an inactive payments add-on means for the bridge (core.md §13).
PAYMENTS_OFF = ("orders through /mbl/v1/order would create users and completed WooCommerce orders but no keys, "
                "so every grant would end failed")
PAYMENTS_FIX = ("activate MEMBERLUX PAYMENTS under Plugins in the WordPress admin "
                "(Network Admin → Plugins on a multisite network)")
#: Error codes that show WordPress did check the Application Password, i.e. it was not ignored for plain http.
PASSWORD_CHECKED = frozenset({"incorrect_password", "invalid_username", "invalid_email"})
CREDENTIAL_HINT = ("check memberlux.rest_user (the account's login) and memberlux.rest_password (an Application "
                   "Password from Users → Profile → Application Passwords, not the login password); some servers "
                   "drop the Authorization header (docs/deployment.md §2)")
PLAIN_HTTP_HINT = ("WordPress ignores Application Passwords over plain http unless the site runs with "
                   "WP_ENVIRONMENT_TYPE=local, and then answers 401 rest_not_logged_in (or rest_forbidden) "
                   "without a word about HTTPS: use an https:// memberlux.rest_base_url, or on a local test site "
                   "set WP_ENVIRONMENT_TYPE=local")


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    seconds: float = 0.0


def _price(text: str) -> float:
    """A product's ``_price``; text that is no number counts as a price (it is not shown to be free)."""
    try:
        return float(text.strip().replace(",", ".")) if text.strip() else 0.0
    except ValueError:
        return 1.0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _db_error_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ()) or ()
    return args[0] if args and isinstance(args[0], int) else None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Doctor:
    def __init__(self, settings: Settings, *, rest_client: MemberLuxRestClient | None = None,
                 clock: Clock | None = None) -> None:
        self.settings = settings
        self.rest_client = rest_client
        self.clock = clock or Clock()
        self.wp_engine: sa.Engine | None = None
        self.site: SiteSchema | None = None
        self.store_engine: sa.Engine | None = None

    def run(self) -> Iterator[Check]:
        steps: list[tuple[str, Callable[[], tuple[str, str]], tuple[str, ...]]] = [
            ("WordPress database", self.wordpress_connect, ()),
            ("Read-only access", self.read_only, ("wp",)),
            ("MemberLux tables", self.tables, ("wp",)),
            ("Optional modules", self.modules, ("site",)),
            ("Site time zone", self.timezone, ("site",)),
            ("Payments add-on", self.payments_addon, ("site",)),
            ("Payments auto-activation", self.auto_activation, ("site",)),
            ("Key products", self.key_products, ("site",)),
            ("REST transport", self.rest_transport, ()),
            ("MemberLux REST API", self.rest, ()),
            ("Store database", self.store, ()),
            ("Store migrations", self.migrations, ("store",)),
            ("Background worker", self.worker, ("store_current",)),
            ("Secrets", self.secrets, ()),
            ("SMTP", self.smtp, ()),
            ("Welcome e-mail", self.welcome_email, ()),
            ("Grant alerts", self.grant_alerts, ("store_current",)),
            ("Alert e-mail", self.alert_email, ("site", "store_current")),
            ("Reminders", self.reminders, ("store_current",)),
            ("MemberLux webhooks", self.memberlux_hooks, ("site",)),
        ]
        for name, step, needs in steps:
            missing = [n for n in needs if not self._have(n)]
            if missing:
                yield Check(name, SKIP, "skipped: an earlier check failed")
                continue
            started = time.monotonic()
            try:
                status, detail = step()
            except Exception as exc:  # noqa: BLE001 - a check that crashes is a failed check
                status, detail = FAIL, _first_line(exc)
            yield Check(name, status, detail, time.monotonic() - started)

    def close(self) -> None:
        for engine in (self.wp_engine, self.store_engine):
            if engine is not None:
                engine.dispose()

    def _have(self, what: str) -> bool:
        if what == "wp":
            return self.wp_engine is not None
        if what == "site":
            return self.site is not None
        if what == "store":
            return self.store_engine is not None
        if what == "store_current":
            return self.store_engine is not None and store_db.is_current(self.store_engine)
        raise ValueError(what)

    @property
    def reader(self) -> MemberLuxReader:
        assert self.wp_engine is not None and self.site is not None
        return MemberLuxReader(self.wp_engine, self.site)

    # --- WordPress ----------------------------------------------------------------------------
    def wordpress_connect(self) -> tuple[str, str]:
        wp = self.settings.wordpress
        engine = connect_wordpress(wordpress_url(self.settings), connect_timeout=wp.connect_timeout_seconds)
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT VERSION()")).scalar() if engine.dialect.name == "mysql" \
                else "SQLite " + str(conn.execute(sa.text("SELECT sqlite_version()")).scalar())
        self.wp_engine = engine
        return OK, f"connected ({version})"

    def read_only(self) -> tuple[str, str]:
        engine = self.wp_engine
        assert engine is not None
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                flag = conn.execute(sa.text("PRAGMA query_only")).scalar()
                return (OK, "database opened read-only (mode=ro, query_only)") if flag else (FAIL, "query_only is off")
            ro = conn.execute(sa.text("SELECT @@session.tx_read_only")).scalar()
            grants = [row[0] for row in conn.execute(sa.text("SHOW GRANTS FOR CURRENT_USER()"))]
        writes = [g for g in grants if any(w in g.upper() for w in ("ALL PRIVILEGES", "INSERT", "UPDATE", "DELETE"))]
        if not ro:
            return FAIL, "the session is not read-only"
        if writes:
            return WARN, ("sessions are read-only, but the MySQL user could write "
                          f"({len(writes)} grant(s) with write privileges); use the SELECT-only user of sql/readonly-user.sql")
        return OK, "read-only sessions and a SELECT-only MySQL user"

    def tables(self) -> tuple[str, str]:
        wp = self.settings.wordpress
        assert self.wp_engine is not None
        try:
            self.site = reflect_site(self.wp_engine, wp.table_prefix, wp.base_prefix or None)
        except (MissingTableError, LegacyKeyStorageError) as exc:
            return FAIL, str(exc)   # written for the operator: every table, and what to do, in full
        keys = self.reader.count_rows("memberlux_term_keys")
        return OK, (f"{len(self.site.tables)} tables reflected in {self.site.reflected_in_seconds * 1000:.0f} ms "
                    f"(prefix '{self.site.prefix}'); {keys} key rows")

    def modules(self) -> tuple[str, str]:
        assert self.site is not None
        off = [name for name, present in self.site.features.items() if not present]
        if not off:
            return OK, "certificates, webhooks, auto-responder and WooCommerce tables present"
        detail = "; ".join(self.site.notices) or f"missing: {', '.join(off)}"
        # Issued certificates without templates never get here: reflection refuses that site outright.
        if "woocommerce" in off and self.settings.memberlux.order_dialect == "woocommerce":
            orders = self._shop_orders()
            if orders:
                return FAIL, (f"{detail} The site has WooCommerce orders ({orders}) and the sidecar orders through "
                              "WooCommerce: without the order item tables a grant whose outcome is unknown cannot be "
                              "matched to the order the site made for it, and could be ordered twice. Restore the "
                              "tables (or check table_prefix).")
        return WARN, detail

    def _shop_orders(self) -> str | None:
        """How the site's WooCommerce orders show without the order item tables ("12 in wp_posts"), or None."""
        assert self.wp_engine is not None and self.site is not None
        posts = self.site.table("posts")
        with self.wp_engine.connect() as conn:
            found = conn.execute(sa.select(sa.func.count()).select_from(posts)
                                 .where(posts.c.post_type == "shop_order")).scalar() or 0
            if not found and self.site.has("wc_orders"):
                orders = self.site.table("wc_orders")
                found = conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar() or 0
                return f"{found} in {orders.name}" if found else None
        return f"{found} in {posts.name}" if found else None

    def timezone(self) -> tuple[str, str]:
        override = self.settings.wordpress.timezone
        tz = self.reader.site_timezone()
        detail = f"{tz.tz} (from {tz.source})"
        if override:
            detail = f"{override} (config override; WordPress says {tz.tz})"
        if tz.warning and not override:
            return WARN, detail + f": {tz.warning}"
        return OK, detail + "; key dates are compared as UTC days, the zone is for display and schedules"

    def payments_addon(self) -> tuple[str, str]:
        """Is MEMBERLUX PAYMENTS active? Its setting survives deactivation, so the plugin lists decide (core.md §13)."""
        assert self.site is not None
        on_site, site_problem = self._site_plugins()
        if on_site is not None and PAYMENTS_PLUGIN in on_site:
            return OK, f"{PAYMENTS_PLUGIN} is in active_plugins: MEMBERLUX PAYMENTS is active"
        sitemeta = self.site.base_prefix + "sitemeta"
        network, network_problem = self._network_plugins(sitemeta)
        if network == "active":
            return OK, (f"{PAYMENTS_PLUGIN} is network-activated (active_sitewide_plugins in {sitemeta}): "
                        "MEMBERLUX PAYMENTS is active")
        unseen = f"; {network_problem}, so a network activation cannot be seen" if network_problem else ""
        if site_problem:
            return WARN, (f"{site_problem}{unseen}: cannot tell whether MEMBERLUX PAYMENTS is active; check Plugins "
                          f"in the WordPress admin. If it is not active, {PAYMENTS_OFF}")
        where = f"{PAYMENTS_PLUGIN} is not in active_plugins"
        if network == "inactive":
            where += f" nor in active_sitewide_plugins of {sitemeta}"
        if network_problem is None:
            return FAIL, f"MEMBERLUX PAYMENTS is not active: {where}; {PAYMENTS_OFF}; {PAYMENTS_FIX}"
        if self.settings.wordpress.base_prefix:
            return WARN, (f"{where} of this site{unseen}: check Network Admin → Plugins, or let the sidecar's MySQL "
                          f"account SELECT {sitemeta}. If the add-on is not active, {PAYMENTS_OFF}")
        return FAIL, (f"MEMBERLUX PAYMENTS is not active: {where}; {PAYMENTS_OFF}; {PAYMENTS_FIX}. This assumes a "
                      f"single site, as wordpress.base_prefix is empty{unseen} (on a network's main site, set "
                      "wordpress.base_prefix)")

    def _site_plugins(self) -> tuple[set[str] | None, str | None]:
        """(plugin files in this site's ``active_plugins``, or None with the reason it cannot be known)."""
        assert self.site is not None
        options = self.site.full_name("options")
        try:
            raw = self.reader.option("active_plugins")
        except sa.exc.SQLAlchemyError as exc:
            return None, f"the option active_plugins cannot be read from {options} ({_first_line(exc)})"
        if raw is None:
            return None, f"the option active_plugins is missing from {options}"
        try:
            plugins = plugin_names(wpdata.maybe_unserialize(raw))
        except wpdata.WpDataError as exc:
            return None, f"the option active_plugins in {options} cannot be decoded ({exc})"
        if plugins is None:
            return None, f"the option active_plugins in {options} is not a list of plugins"
        return plugins, None

    def _network_plugins(self, sitemeta: str) -> tuple[str | None, str | None]:
        """('active' | 'inactive' | 'single', None), or (None, the reason it cannot be known).

        'single': the table does not exist, so this is not a multisite network."""
        try:
            rows = self.reader.network_meta("active_sitewide_plugins")
        except sa.exc.DBAPIError as exc:
            code = _db_error_code(exc)
            if code == 1146 or "no such table" in str(exc.orig).lower():
                return "single", None
            if code == 1142:
                return None, f"{sitemeta} cannot be read: SELECT denied"
            return None, f"{sitemeta} cannot be read: {_first_line(exc.orig)}"
        found: dict[int, bool] = {}
        for network_id, raw in rows:
            try:
                value = wpdata.maybe_unserialize(raw)
            except wpdata.WpDataError as exc:
                return None, f"active_sitewide_plugins in {sitemeta} cannot be decoded: {exc}"
            found[network_id] = isinstance(value, dict) and PAYMENTS_PLUGIN in value
        if len(set(found.values())) > 1:
            on = ", ".join(str(n) for n, active in found.items() if active)
            off = ", ".join(str(n) for n, active in found.items() if not active)
            return None, (f"{sitemeta} holds several networks and the add-on is network-activated on network {on} "
                          f"but not on {off}: which one this site belongs to is not known")
        return ("active" if any(found.values()) else "inactive"), None

    def auto_activation(self) -> tuple[str, str]:
        options = wpdata.maybe_unserialize(self.reader.option("wpm_main_options"))
        mblp = options.get("mblp") if isinstance(options, dict) else None
        value = mblp.get("auto_activation") if isinstance(mblp, dict) else None
        if value == "on":
            return OK, ("wpm_main_options.mblp.auto_activation is on: while the add-on is active, it activates "
                        "each order's key for the customer")
        return WARN, (f"wpm_main_options.mblp.auto_activation is {value!r}: orders through /mbl/v1/order would "
                      "create keys that are only e-mailed, not activated; switch it on in MEMBERLUX PAYMENTS")

    # --- REST -------------------------------------------------------------------------------
    def key_products(self) -> tuple[str, str]:
        """What a CRM grant costs on the site: each is a completed WooCommerce order of a key product."""
        from sidecar.memberlux.products import ProductCatalog

        assert self.wp_engine is not None and self.site is not None
        if self.settings.memberlux.order_dialect != "woocommerce":
            return OK, "orders name the level and term (order_dialect = 'term_id'), not a WooCommerce product"
        live = [p for p in ProductCatalog(self.wp_engine, self.site).products()
                if p.level_id and p.status in ("publish", "private")]
        if not live:
            return WARN, "no mbl_key product with a level: every grant would wait for one"
        priced = [p for p in live if _price(p.price) > 0]
        public = [p for p in live if p.status == "publish"]
        if not priced and not public:
            return OK, f"{len(live)} key product(s), all private and free"
        problems = []
        if priced:
            listed = ", ".join(f"#{p.product_id} {p.price}" for p in priced[:5]) + (" …" if len(priced) > 5 else "")
            problems.append(f"{len(priced)} of {len(live)} key products have a price ({listed}): each grant through "
                            "one is a completed WooCommerce order at that price, counted in the sales reports")
        if public:
            problems.append(f"{len(public)} are published: anyone can also buy them in the shop")
        return WARN, ("; ".join(problems) + ". For CRM grants use private zero-price mbl_key products "
                      "(bridge.product_overrides can point a level and term at one); see docs/grant-bridge.md")

    def rest_transport(self) -> tuple[str, str]:
        url = urlsplit(self.settings.memberlux.rest_base_url)
        host = url.hostname or ""
        if url.scheme == "https":
            return OK, f"https to {host}"
        if _is_loopback(host):
            return OK, f"plain http to {host} (loopback: the Application Password does not leave this machine)"
        return WARN, (f"memberlux.rest_base_url is plain http to {host}: the Application Password, a full "
                      "administrator credential, travels in clear on every call; use https:// (WordPress also "
                      "ignores Application Passwords over http unless the site runs with WP_ENVIRONMENT_TYPE=local)")

    def _rest_hints(self, exc: RestError) -> str:
        if exc.status != 401:
            return ""
        hints = [CREDENTIAL_HINT]
        if urlsplit(self.settings.memberlux.rest_base_url).scheme == "http" and exc.code not in PASSWORD_CHECKED:
            hints.insert(0, PLAIN_HTTP_HINT)
        return " — " + "; ".join(hints)

    def rest(self) -> tuple[str, str]:
        ml = self.settings.memberlux
        if not ml.rest_user or ml.rest_password is None:
            return FAIL, "memberlux.rest_user and memberlux.rest_password (an Application Password) are required"
        client = self.rest_client or MemberLuxRestClient(ml.rest_base_url, ml.rest_user, ml.rest_password.reveal(),
                                                         timeout=min(ml.timeout_seconds, 15), verify_tls=ml.verify_tls)
        try:
            index = client.index()
            namespaces = index.get("namespaces") or []
            if "mbl/v1" not in namespaces:
                return FAIL, ("the site does not serve the mbl/v1 namespace: enable the MemberLux API & webhooks "
                              "module (licence type api or fullpackaccess)")
            me = client.current_user()
        except RestError as exc:
            return FAIL, str(exc) + self._rest_hints(exc)
        capabilities = me.get("capabilities") or {}
        who = me.get("username") or me.get("slug") or me.get("name") or "?"
        if not capabilities.get("manage_options"):
            return FAIL, f"authenticated as '{who}', who lacks manage_options: orders would be refused with 403"
        return OK, f"mbl/v1 served; authenticated as '{who}' with manage_options"

    # --- store --------------------------------------------------------------------------------
    def store(self) -> tuple[str, str]:
        engine = store_db.create_store_engine(store_url(self.settings))
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        store_db.guard_separate(self.settings.store.url, self.settings.wordpress.db_url, engine,
                                self.settings.wordpress.table_prefix)
        self.store_engine = engine
        return OK, f"reachable ({engine.dialect.name}), separate from WordPress"

    def migrations(self) -> tuple[str, str]:
        assert self.store_engine is not None
        current, head = store_db.current_revision(self.store_engine), store_db.head_revision()
        if current == head:
            return OK, f"at {head}"
        return FAIL, f"at {current or 'no revision'}, code expects {head}: run `mlsidecar db upgrade`"

    def worker(self) -> tuple[str, str]:
        assert self.store_engine is not None
        lease = leases.get(store_db.session_factory(self.store_engine), HEARTBEAT_JOB)
        if lease is None or lease.last_finished_at is None:
            return WARN, "no worker has run yet: start `mlsidecar worker` (scheduled jobs run only there)"
        from datetime import datetime, timezone

        age = datetime.now(timezone.utc) - lease.last_finished_at
        if age > timedelta(minutes=5):
            return WARN, f"last heartbeat {int(age.total_seconds() // 60)} min ago from {lease.holder}: is the worker running?"
        return OK, f"heartbeat {int(age.total_seconds())} s ago from {lease.holder}"

    # --- secrets --------------------------------------------------------------------------------
    def secrets(self) -> tuple[str, str]:
        """Secrets belong in the environment or in files readable by the service only, not in the
        configuration file, which ends up in backups, tickets and version control."""
        from sidecar.config import describe_settings

        literal: list[str] = []

        def walk(value: object, path: str) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(inner, f"{path}.{key}" if path else str(key))
            elif isinstance(value, list):
                for n, inner in enumerate(value):
                    walk(inner, f"{path}[{n}]")
            elif isinstance(value, str) and value.startswith("<secret from literal>"):  # keys add their scopes
                literal.append(path)

        walk(describe_settings(self.settings), "")
        if literal:
            return WARN, (f"written in the configuration itself: {', '.join(literal)}; "
                          "use 'env:VARIABLE' or 'file:/path' references")
        return OK, "every secret comes from the environment or a file"

    # --- SMTP ---------------------------------------------------------------------------------
    def smtp(self) -> tuple[str, str]:
        smtp = self.settings.smtp
        if smtp.pickup_dir:
            return self._pickup_dir(Path(smtp.pickup_dir))
        if not smtp.host:
            return WARN, "smtp.host and smtp.pickup_dir are empty: e-mail (reminders, notifications) is disabled"
        from sidecar.mail.mailer import Mailer

        with Mailer(smtp).session():
            pass
        auth = " and logged in" if smtp.username else ""
        return OK, f"{smtp.host}:{smtp.port} answered ({smtp.security}){auth}"

    @staticmethod
    def _pickup_dir(directory: Path) -> tuple[str, str]:
        """The pickup directory is the delivery: it must take a file, as the mailer writes one."""
        probe = directory / f".doctor-{os.getpid()}.part"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            return FAIL, f"smtp.pickup_dir {directory} does not take files: {exc.strerror or exc}"
        return OK, f"letters are written as .eml files into {directory} (smtp.pickup_dir; nothing is sent)"

    def welcome_email(self) -> tuple[str, str]:
        settings = self.settings
        bridge = settings.bridge
        takes_grants = bool(bridge.api_keys or bridge.hmac_secret or bridge.standard_webhook_secrets
                            or bridge.amocrm.enabled)
        if not takes_grants:
            return OK, "the grant bridge has no credential: no order creates learners"
        if not bridge.welcome_email.enabled:
            return WARN, ("bridge.welcome_email is off: a learner whose account a grant's order creates gets a random "
                          "password and no letter from MemberLux, so no way to log in; turn it on (it needs [smtp])")
        if not settings.smtp.delivers:
            return WARN, "bridge.welcome_email is on but smtp.host and smtp.pickup_dir are empty: no letter can go out"
        return OK, "new learners get their login and a password-reset link"

    # --- grant alerts ---------------------------------------------------------------------------
    def grant_alerts(self) -> tuple[str, str]:
        from sidecar.bridge import attention

        assert self.store_engine is not None
        with store_db.session_factory(self.store_engine)() as session:
            counts = attention.counts(session, self.settings, self.clock.now())
        if not counts.total:
            return OK, "no failed grant, none whose outcome is still unknown after its settle time"
        parts = []
        if counts.failed:
            parts.append(f"{counts.failed} failed ({attention.FAILED_LIST}: retry or cancel each)")
        if counts.unsettled:
            parts.append(f"{counts.unsettled} with an outcome still unknown after the settle time "
                         f"({attention.UNSETTLED_LIST}; is the worker running and reading the site's database?)")
        return WARN, "; ".join(parts)

    def alert_email(self) -> tuple[str, str]:
        from sidecar.bridge.alerts import recipient
        from sidecar.store.alert_models import AlertDigest, SKIPPED

        settings = self.settings
        unmailed = "failed and unsettled grants show only on the first page, here and as webhook events"
        if not settings.alerts.enabled:
            return OK, f"off (alerts.enabled = false): {unmailed}"
        if not settings.smtp.delivers:
            return WARN, f"no alert digest can go out: smtp.host and smtp.pickup_dir are empty; {unmailed}"
        assert self.store_engine is not None
        sessions = store_db.session_factory(self.store_engine)
        to = recipient(settings, self.reader, sessions)
        if not to.address:
            return WARN, f"no alert digest can go out: {to.problem}; set alerts.to. Until then {unmailed}"
        where = "alerts.to" if to.source == "alerts.to" else "the reminders' administrator address; alerts.to is empty"
        detail = (f"a digest to {to.address} ({where}) at most every {settings.alerts.digest_interval_minutes} min, "
                  "each failed or unsettled grant once")
        with sessions() as session:
            last = session.scalars(sa.select(AlertDigest).where(AlertDigest.state != SKIPPED)
                                   .order_by(AlertDigest.id.desc()).limit(1)).first()
        if last is None:
            return OK, detail + "; none sent yet"
        if last.state == "planned" and last.last_error:
            return WARN, f"{detail}; the last digest waits for a retry after: {last.last_error}"
        if last.state in ("failed", "unknown"):
            return WARN, (f"{detail}; the last digest ({last.created_at:%Y-%m-%d %H:%M} UTC) is {last.state}: "
                          f"{last.last_error or last.reason}")
        return OK, f"{detail}; last digest {last.created_at:%Y-%m-%d %H:%M} UTC: {last.state}"

    # --- reminders ------------------------------------------------------------------------------
    def reminders(self) -> tuple[str, str]:
        settings = self.settings
        if not settings.reminders.enabled:
            return OK, "switched off (reminders.enabled = false)"
        missing = [name for name, value in (("web.public_url", settings.web.public_url),
                                            ("web.secret_key", settings.web.secret_key)) if not value]
        if missing:
            return WARN, (f"{' and '.join(missing)} not set: letters need a working unsubscribe link, "
                          "so they wait in the ledger until it is")
        if not settings.smtp.delivers:
            return WARN, "planned but not sent: smtp.host and smtp.pickup_dir are empty"
        assert self.store_engine is not None
        from sidecar.jobs import REMINDERS_DAILY_JOB

        lease = leases.get(store_db.session_factory(self.store_engine), REMINDERS_DAILY_JOB)
        mode = "dry run (nothing is sent)" if settings.reminders.dry_run else "sending"
        at = f"daily at {settings.schedule.reminders_at:%H:%M} ({settings.schedule.timezone})"
        if lease is None or lease.last_finished_at is None:
            return OK, f"{mode}, {at}; not run yet"
        status = WARN if (lease.last_outcome or "").startswith("failed") else OK
        return status, f"{mode}, {at}; last run {lease.last_finished_at:%Y-%m-%d %H:%M} UTC: {lease.last_outcome}"

    # --- MemberLux's own webhooks -------------------------------------------------------------------
    def memberlux_hooks(self) -> tuple[str, str]:
        settings = self.settings
        if settings.webhooks.memberlux_path_token is None:
            return OK, "not used (webhooks.memberlux_path_token is empty): programs and sleepers rely on polling"
        if not settings.web.public_url:
            return WARN, "web.public_url is not set: cannot tell which URL MemberLux should call"
        assert self.wp_engine is not None and self.site is not None
        from sidecar.memberlux.reader import MemberLuxReader
        from sidecar.memberlux.schema import FeatureUnavailable

        expected = settings.web.public_url.rstrip("/") + "/hooks/memberlux/"
        try:
            hooks = MemberLuxReader(self.wp_engine, self.site).hooks()
        except FeatureUnavailable:
            return WARN, "the mbl-api webhook tables are missing: MemberLux cannot send webhooks on this site"
        ours = [(hook_id, destination, sources) for hook_id, destination, sources in hooks
                if destination.startswith(expected)]
        if not ours:
            return WARN, (f"no MemberLux webhook points at {expected}<token>: add it in MemberLux → Webhooks "
                          "(sources: all) so activations are seen at once")
        token = settings.webhooks.memberlux_path_token.reveal()
        right = [(hook_id, sources) for hook_id, destination, sources in ours if destination == expected + token]
        if not right:
            return FAIL, (f"MemberLux webhook(s) {', '.join(str(h) for h, _, _ in ours)} call {expected}… "
                          "with another token (the token itself is not shown)")
        sources = sorted({s for _, ss in right for s in ss})
        if not sources:
            return WARN, f"MemberLux webhook {right[0][0]} has no source subscribed: it never fires"
        if "all" not in sources:
            return WARN, (f"MemberLux webhook {right[0][0]} calls the sidecar only for: {', '.join(sources)}; "
                          "orders through /mbl/v1/order (the sidecar's own grants too) have an empty source, which "
                          "MemberLux sends only to webhooks subscribed to all: subscribe it to all")
        return OK, f"MemberLux webhook {right[0][0]} calls the sidecar for: {', '.join(sources)}"


def render_table(checks: list[Check]) -> str:
    marks = {OK: "OK  ", WARN: "WARN", FAIL: "FAIL", SKIP: "SKIP"}
    width = max(len(c.name) for c in checks)
    return "\n".join(f"{marks[c.status]}  {c.name.ljust(width)}  {c.detail}" for c in checks)
