"""`mlsidecar doctor`: every dependency checked once, in the order an operator would fix them.

Each check returns OK, WARN or FAIL with a sentence that says what to do. Checks after a failed
prerequisite are reported as skipped rather than crashing with a cascade of secondary errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from sidecar.bootstrap import store_url, wordpress_url
from sidecar.config import Settings
from sidecar.memberlux import wpdata
from sidecar.memberlux.reader import MemberLuxReader
from sidecar.memberlux.rest import MemberLuxRestClient, RestError
from sidecar.memberlux.schema import SiteSchema, connect_wordpress, reflect_site
from sidecar.status import HEARTBEAT_JOB
from sidecar.store import db as store_db
from sidecar.store import leases

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    seconds: float = 0.0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class Doctor:
    def __init__(self, settings: Settings, *, rest_client: MemberLuxRestClient | None = None) -> None:
        self.settings = settings
        self.rest_client = rest_client
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
            ("Payments auto-activation", self.auto_activation, ("site",)),
            ("MemberLux REST API", self.rest, ()),
            ("Store database", self.store, ()),
            ("Store migrations", self.migrations, ("store",)),
            ("Background worker", self.worker, ("store_current",)),
            ("Secrets", self.secrets, ()),
            ("SMTP", self.smtp, ()),
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
        self.site = reflect_site(self.wp_engine, wp.table_prefix, wp.base_prefix or None)
        keys = self.reader.count_rows("memberlux_term_keys")
        return OK, (f"{len(self.site.tables)} tables reflected in {self.site.reflected_in_seconds * 1000:.0f} ms "
                    f"(prefix '{self.site.prefix}'); {keys} key rows")

    def modules(self) -> tuple[str, str]:
        assert self.site is not None
        off = [name for name, present in self.site.features.items() if not present]
        if off:
            return WARN, "; ".join(self.site.notices) or f"missing: {', '.join(off)}"
        return OK, "certificates, webhooks, auto-responder and WooCommerce tables present"

    def timezone(self) -> tuple[str, str]:
        override = self.settings.wordpress.timezone
        tz = self.reader.site_timezone()
        detail = f"{tz.tz} (from {tz.source})"
        if override:
            detail = f"{override} (config override; WordPress says {tz.tz})"
        if tz.warning and not override:
            return WARN, detail + f": {tz.warning}"
        return OK, detail + "; key dates are compared as UTC days, the zone is for display and schedules"

    def auto_activation(self) -> tuple[str, str]:
        options = wpdata.maybe_unserialize(self.reader.option("wpm_main_options"))
        mblp = options.get("mblp") if isinstance(options, dict) else None
        value = mblp.get("auto_activation") if isinstance(mblp, dict) else None
        if value == "on":
            return OK, "wpm_main_options.mblp.auto_activation is on: orders activate their keys"
        return WARN, (f"wpm_main_options.mblp.auto_activation is {value!r}: orders through /mbl/v1/order would "
                      "create keys that are only e-mailed, not activated; switch it on in MEMBERLUX PAYMENTS")

    # --- REST -------------------------------------------------------------------------------
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
            return FAIL, str(exc)
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
            elif value == "<secret from literal>":
                literal.append(path)

        walk(describe_settings(self.settings), "")
        if literal:
            return WARN, (f"written in the configuration itself: {', '.join(literal)}; "
                          "use 'env:VARIABLE' or 'file:/path' references")
        return OK, "every secret comes from the environment or a file"

    # --- SMTP ---------------------------------------------------------------------------------
    def smtp(self) -> tuple[str, str]:
        smtp = self.settings.smtp
        if not smtp.host:
            return WARN, "smtp.host is empty: e-mail (reminders, notifications) is disabled"
        from sidecar.mail.mailer import Mailer

        with Mailer(smtp).session():
            pass
        auth = " and logged in" if smtp.username else ""
        return OK, f"{smtp.host}:{smtp.port} answered ({smtp.security}){auth}"

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
        if not settings.smtp.host:
            return WARN, "planned but not sent: smtp.host is empty"
        assert self.store_engine is not None
        from sidecar.worker import REMINDERS_DAILY_JOB

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
        return OK, f"MemberLux webhook {right[0][0]} calls the sidecar for: {', '.join(sources)}"


def render_table(checks: list[Check]) -> str:
    marks = {OK: "OK  ", WARN: "WARN", FAIL: "FAIL", SKIP: "SKIP"}
    width = max(len(c.name) for c in checks)
    return "\n".join(f"{marks[c.status]}  {c.name.ljust(width)}  {c.detail}" for c in checks)
