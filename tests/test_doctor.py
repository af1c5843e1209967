"""`mlsidecar doctor` against the emulated site: every check reported, failures explained."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from sidecar.bootstrap import build_runtime, store_url
from sidecar.devstack.seed import php_serialize
from sidecar.doctor import FAIL, OK, SKIP, WARN, Doctor, render_table
from sidecar.memberlux.schema import MissingTableError
from sidecar.store import db as store_db
from tests.stores import migrate_store
from tests.strong_secrets import strong_secret

PAYMENTS = "mbl-payments/mbl-payments.php"
OTHER_PLUGINS = ["member-luxe/member-luxe.php", "mbl-api/mbl-api.php", "woocommerce/woocommerce.php"]


def checks_by_name(settings, **doctor_args) -> dict:
    doctor = Doctor(settings, **doctor_args)
    try:
        return {c.name: c for c in doctor.run()}
    finally:
        doctor.close()


def migrate(settings) -> None:
    migrate_store(store_url(settings))


def test_healthy_demo_site(small_site, emulator, settings_for):
    settings = settings_for(small_site, emulator)
    migrate(settings)
    checks = checks_by_name(settings)
    for name in ("WordPress database", "Read-only access", "MemberLux tables", "Optional modules", "Site time zone",
                 "Payments add-on", "Payments auto-activation", "REST transport", "MemberLux REST API",
                 "Store database", "Store migrations"):
        assert checks[name].status == OK, (name, checks[name].detail)
    assert "manage_options" in checks["MemberLux REST API"].detail
    assert checks["Background worker"].status == WARN  # no worker ran in this test
    assert checks["SMTP"].status == WARN and "disabled" in checks["SMTP"].detail
    assert checks["Reminders"].status == WARN and "web.public_url not set" in checks["Reminders"].detail
    table = render_table(list(checks.values()))
    assert "OK    WordPress database" in table


def test_wrong_rest_password_fails_with_reason(small_site, emulator, settings_for):
    base_url, user, _password, engine = emulator
    settings = settings_for(small_site, (base_url, user, "wrong-password", engine))
    check = checks_by_name(settings)["MemberLux REST API"]
    assert check.status == FAIL and "401 incorrect_password" in check.detail
    assert "an Application Password from Users → Profile → Application Passwords" in check.detail
    # WordPress checked the password, so plain http was not the reason: no word about it.
    assert "WP_ENVIRONMENT_TYPE" not in check.detail


def test_unreachable_site_and_missing_tables(tmp_path, settings_for):
    settings = settings_for(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    checks = checks_by_name(settings)
    assert checks["WordPress database"].status == OK
    assert checks["MemberLux tables"].status == FAIL and "wp_users" in checks["MemberLux tables"].detail
    assert checks["Optional modules"].status == SKIP
    assert checks["MemberLux REST API"].status == FAIL
    assert checks["Store migrations"].status == FAIL and "mlsidecar db upgrade" in checks["Store migrations"].detail


def test_wrong_prefix_is_named(small_site, emulator, settings_for):
    settings = settings_for(small_site, emulator, wordpress={"table_prefix": "wpx_"})
    check = checks_by_name(settings)["MemberLux tables"]
    assert check.status == FAIL and "wpx_" in check.detail


def test_worker_heartbeat_seen(runtime):
    from datetime import timedelta

    from sidecar.worker import heartbeat, run_leased

    assert run_leased(runtime, "worker.heartbeat", heartbeat, timedelta(seconds=30))
    check = checks_by_name(runtime.settings)["Background worker"]
    assert check.status == OK and "heartbeat" in check.detail


def test_smtp_reachable(small_site, emulator, settings_for, smtp_server):
    host, port, _inbox = smtp_server
    settings = settings_for(small_site, emulator, smtp={"host": host, "port": port, "security": "none",
                                                        "from_address": "school@example.org"})
    check = checks_by_name(settings)["SMTP"]
    assert check.status == OK and f"{host}:{port}" in check.detail


def test_smtp_down_fails(small_site, emulator, settings_for):
    settings = settings_for(small_site, emulator, smtp={"host": "127.0.0.1", "port": 9, "security": "none",
                                                        "from_address": "school@example.org"})
    assert checks_by_name(settings)["SMTP"].status == FAIL


def test_a_pickup_directory_is_working_mail_delivery(small_site, emulator, settings_for, tmp_path):
    settings = settings_for(small_site, emulator, smtp={"pickup_dir": str(tmp_path / "mail"),
                                                        "from_address": "school@example.org"},
                            web={"public_url": "http://127.0.0.1:8080"})
    migrate(settings)
    checks = checks_by_name(settings)
    assert checks["SMTP"].status == OK and str(tmp_path / "mail") in checks["SMTP"].detail
    assert "nothing is sent" in checks["SMTP"].detail
    assert checks["Reminders"].status == OK, checks["Reminders"].detail
    assert not list((tmp_path / "mail").iterdir()), "the probe file is removed again"


def test_a_pickup_directory_that_takes_no_files_fails(small_site, emulator, settings_for, tmp_path):
    occupied = tmp_path / "a-file"
    occupied.write_text("not a directory")
    settings = settings_for(small_site, emulator, smtp={"pickup_dir": str(occupied),
                                                        "from_address": "school@example.org"})
    check = checks_by_name(settings)["SMTP"]
    assert check.status == FAIL and "does not take files" in check.detail and str(occupied) in check.detail


def test_every_missing_required_table_is_named_in_one_run(tmp_path, settings_for):
    from tests.sites import empty_site_schema

    site = tmp_path / "site.sqlite"
    engine = sa.create_engine(f"sqlite:///{site}")
    metadata = empty_site_schema(engine)
    for short in ("posts", "postmeta", "memberlux_keys_meta", "termmeta"):
        metadata.tables[f"wp_{short}"].drop(engine)
    engine.dispose()
    check = checks_by_name(settings_for(f"sqlite:///{site}"))["MemberLux tables"]
    assert check.status == FAIL
    assert "4 tables not found" in check.detail
    for short in ("posts", "postmeta", "memberlux_keys_meta", "termmeta"):
        assert f"wp_{short}" in check.detail


def test_certificates_without_their_templates_table_fail(small_site, emulator, settings_for):
    engine = sa.create_engine(small_site)
    with engine.begin() as conn:
        issued = conn.exec_driver_sql("SELECT COUNT(*) FROM wp_memberlux_certificate").scalar()
        conn.exec_driver_sql("DROP TABLE wp_memberlux_certificate_templates")
    engine.dispose()
    assert issued > 0, "the small site has issued certificates"
    settings = settings_for(small_site, emulator)
    checks = checks_by_name(settings)
    check = checks["MemberLux tables"]
    assert check.status == FAIL
    assert "wp_memberlux_certificate_templates not found" in check.detail
    assert "every certificate holder would be reported as a sleeper" in check.detail
    assert checks["Optional modules"].status == SKIP
    # Nothing starts either: the web app, the worker and every command build their runtime this way.
    migrate(settings)
    with pytest.raises(MissingTableError, match="holds issued certificates"):
        build_runtime(settings)


def test_woocommerce_orders_without_their_item_tables_fail_when_grants_go_through_woocommerce(small_site, settings_for):
    engine = sa.create_engine(small_site)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE wp_woocommerce_order_itemmeta")
        conn.exec_driver_sql("INSERT INTO wp_posts (post_content, post_title, post_excerpt, post_status, post_type) "
                             "VALUES ('', 'Order', '', 'wc-completed', 'shop_order')")
        orders = conn.exec_driver_sql("SELECT COUNT(*) FROM wp_posts WHERE post_type = 'shop_order'").scalar()
    engine.dispose()
    check = checks_by_name(settings_for(small_site))["Optional modules"]
    assert check.status == FAIL, check.detail
    assert f"WooCommerce orders ({orders} in wp_posts)" in check.detail and "ordered twice" in check.detail
    # Orders by term id never look for WooCommerce orders: the same site is only a warning then.
    check = checks_by_name(settings_for(small_site, memberlux={"order_dialect": "term_id"}))["Optional modules"]
    assert check.status == WARN and "WooCommerce tables not found" in check.detail


def test_doctor_warns_while_new_learners_would_get_no_login(small_site, emulator, settings_for, tmp_path):
    mail = {"pickup_dir": str(tmp_path / "mail"), "from_address": "school@example.org"}
    crm = {"api_keys": {"crm": strong_secret("doctor-crm")}}
    assert checks_by_name(settings_for(small_site, emulator))["Welcome e-mail"].status == OK   # no bridge credential
    check = checks_by_name(settings_for(small_site, emulator, bridge=crm))["Welcome e-mail"]
    assert check.status == WARN and "no way to log in" in check.detail
    check = checks_by_name(settings_for(small_site, emulator, bridge=crm, smtp=mail))["Welcome e-mail"]
    assert check.status == OK and "password-reset link" in check.detail
    check = checks_by_name(settings_for(small_site, emulator, bridge={**crm, "welcome_email": {"enabled": True}}))
    assert check["Welcome e-mail"].status == WARN and "no letter can go out" in check["Welcome e-mail"].detail


def test_priced_or_published_key_products_are_pointed_out(small_site, settings_for):
    check = checks_by_name(settings_for(small_site))["Key products"]
    assert check.status == WARN
    assert "key products have a price (#3 990," in check.detail and "counted in the sales reports" in check.detail
    assert "are published: anyone can also buy them in the shop" in check.detail
    engine = sa.create_engine(small_site)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE wp_postmeta SET meta_value = '0' WHERE meta_key = '_price'")
        conn.exec_driver_sql("UPDATE wp_posts SET post_status = 'private' WHERE post_type = 'product' "
                             "AND post_status = 'publish'")
    engine.dispose()
    check = checks_by_name(settings_for(small_site))["Key products"]
    assert check.status == OK and "all private and free" in check.detail
    check = checks_by_name(settings_for(small_site, memberlux={"order_dialect": "term_id"}))["Key products"]
    assert check.status == OK and "not a WooCommerce product" in check.detail


def test_reminders_readiness_and_last_run(small_site, emulator, settings_for, smtp_server):
    from datetime import datetime, timedelta, timezone

    from sidecar.bootstrap import store_url
    from sidecar.store import leases
    from sidecar.jobs import REMINDERS_DAILY_JOB

    host, port, _inbox = smtp_server
    settings = settings_for(small_site, emulator, web={"public_url": "https://side.example"},
                            smtp={"host": host, "port": port, "security": "none", "from_address": "s@example.org"})
    migrate(settings)
    check = checks_by_name(settings)["Reminders"]
    assert check.status == OK and "sending, daily at 09:00 (site); not run yet" in check.detail
    engine = store_db.create_store_engine(store_url(settings))
    sessions = store_db.session_factory(engine)
    now = datetime.now(timezone.utc)
    leases.try_acquire(sessions, REMINDERS_DAILY_JOB, "w", timedelta(hours=1), now)
    leases.release(sessions, REMINDERS_DAILY_JOB, "w", now, "failed: OperationalError: gone away")
    engine.dispose()
    check = checks_by_name(settings)["Reminders"]
    assert check.status == WARN and "failed: OperationalError" in check.detail
    off = settings_for(small_site, emulator, reminders={"enabled": False})
    migrate(off)
    assert checks_by_name(off)["Reminders"].status == OK


def test_memberlux_webhook_registration_is_reported_without_the_token(small_site, emulator, settings_for):
    *_, engine = emulator
    hook = sa.Table("wp_memberlux_hook", sa.MetaData(), autoload_with=engine)
    action = sa.Table("wp_memberlux_hook_action", sa.MetaData(), autoload_with=engine)
    token = "hook-token-not-for-production-123"
    settings = settings_for(small_site, emulator, web={"public_url": "https://side.example"},
                            webhooks={"memberlux_path_token": token})
    migrate(settings)
    assert "no MemberLux webhook points at https://side.example/hooks/memberlux/" in \
        checks_by_name(settings)["MemberLux webhooks"].detail
    with engine.begin() as conn:
        conn.execute(hook.insert().values(id=90, destination="https://side.example/hooks/memberlux/old-token", sort=9))
    check = checks_by_name(settings)["MemberLux webhooks"]
    assert check.status == FAIL and "another token" in check.detail and "old-token" not in check.detail
    with engine.begin() as conn:
        conn.execute(hook.insert().values(id=91, destination=f"https://side.example/hooks/memberlux/{token}", sort=10))
        conn.execute(action.insert(), [{"hook_id": 91, "action": "activation_page"}, {"hook_id": 91, "action": "purchase"}])
    check = checks_by_name(settings)["MemberLux webhooks"]
    # REST orders (the sidecar's own grants) carry an empty source: only `all` delivers them (core.md §13).
    assert check.status == WARN and check.detail == (
        "MemberLux webhook 91 calls the sidecar only for: activation_page, purchase; orders through /mbl/v1/order "
        "(the sidecar's own grants too) have an empty source, which MemberLux sends only to webhooks subscribed to "
        "all: subscribe it to all")
    assert token not in check.detail
    with engine.begin() as conn:
        conn.execute(action.insert().values(hook_id=91, action="all"))
    check = checks_by_name(settings)["MemberLux webhooks"]
    assert check.status == OK
    assert check.detail == "MemberLux webhook 91 calls the sidecar for: activation_page, all, purchase"
    assert token not in check.detail


def test_secrets_written_in_the_configuration_are_pointed_out(small_site, emulator, settings_for, tmp_path, monkeypatch):
    settings = settings_for(small_site, emulator, bridge={"api_keys": {"crm": strong_secret("doctor-key")}},
                            web={"api_tokens": {"bi": {"token": strong_secret("doctor-token"), "scopes": ["read"]}}})
    migrate(settings)                                      # the test settings carry literal secrets
    check = checks_by_name(settings)["Secrets"]
    assert check.status == WARN and "memberlux.rest_password" in check.detail and "web.secret_key" in check.detail
    assert "bridge.api_keys.crm" in check.detail and "web.api_tokens.bi" in check.detail   # shown with their scopes
    from sidecar.config import settings_from_mapping

    secret_file = tmp_path / "rest-password"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("MLS_TEST_WEB_KEY", strong_secret("from-the-environment"))
    clean = settings_from_mapping({
        "wordpress": {"db_url": small_site}, "store": {"url": settings.store.url},
        "memberlux": {"rest_base_url": settings.memberlux.rest_base_url, "rest_user": "u",
                      "rest_password": f"file:{secret_file}"},
        "web": {"secret_key": "env:MLS_TEST_WEB_KEY"}}, environ={})
    assert checks_by_name(clean)["Secrets"].status == OK


# --- the payments add-on: active, not only configured ------------------------------------------------

def set_option(site_url: str, name: str, value: str | None) -> None:
    """Change (or, with None, delete) an option of the emulated site, as WordPress would store it."""
    engine = sa.create_engine(site_url)
    options = sa.Table("wp_options", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(options.delete().where(options.c.option_name == name))
        if value is not None:
            conn.execute(options.insert().values(option_name=name, option_value=value, autoload="yes"))
    engine.dispose()


def add_sitemeta(site_url: str, rows: list[tuple[int, str]]) -> None:
    """Turn the site into a multisite network's main site: ``wp_sitemeta`` with active_sitewide_plugins."""
    engine = sa.create_engine(site_url)
    sitemeta = sa.Table("wp_sitemeta", sa.MetaData(), sa.Column("meta_id", sa.Integer, primary_key=True),
                        sa.Column("site_id", sa.Integer, nullable=False), sa.Column("meta_key", sa.String(255)),
                        sa.Column("meta_value", sa.Text))
    sitemeta.create(engine)
    with engine.begin() as conn:
        conn.execute(sitemeta.insert(), [{"site_id": network, "meta_key": "active_sitewide_plugins",
                                          "meta_value": value} for network, value in rows])
    engine.dispose()


def test_payments_addon_off_fails_although_its_auto_activation_setting_stays_on(small_site, settings_for):
    # WordPress unsets a deactivated plugin's entry without renumbering: an array with a gap.
    set_option(small_site, "active_plugins", php_serialize({0: OTHER_PLUGINS[0], 2: OTHER_PLUGINS[1]}))
    checks = checks_by_name(settings_for(small_site))
    check = checks["Payments add-on"]
    assert check.status == FAIL
    assert check.detail == (
        "MEMBERLUX PAYMENTS is not active: mbl-payments/mbl-payments.php is not in active_plugins; orders through "
        "/mbl/v1/order would create users and completed WooCommerce orders but no keys, so every grant would end "
        "failed; activate MEMBERLUX PAYMENTS under Plugins in the WordPress admin (Network Admin → Plugins on a "
        "multisite network)")
    assert checks["Payments auto-activation"].status == OK  # the setting alone proves nothing

    set_option(small_site, "active_plugins", php_serialize({0: OTHER_PLUGINS[0], 3: PAYMENTS}))
    check = checks_by_name(settings_for(small_site))["Payments add-on"]
    assert check.status == OK
    assert check.detail == "mbl-payments/mbl-payments.php is in active_plugins: MEMBERLUX PAYMENTS is active"


@pytest.mark.parametrize("stored, reason", [
    (None, "the option active_plugins is missing from wp_options"),
    ('a:2:{i:0;s:99:"member-luxe/member-luxe.php";}', "the option active_plugins in wp_options cannot be decoded"),
    ('s:29:"mbl-payments/mbl-payments.php";', "the option active_plugins in wp_options is not a list of plugins"),
])
def test_active_plugins_missing_or_unreadable_is_a_warning(small_site, settings_for, stored, reason):
    set_option(small_site, "active_plugins", stored)
    check = checks_by_name(settings_for(small_site))["Payments add-on"]
    assert check.status == WARN, check.detail
    assert check.detail.startswith(reason)
    assert "cannot tell whether MEMBERLUX PAYMENTS is active; check Plugins in the WordPress admin" in check.detail
    assert "no keys, so every grant would end failed" in check.detail


def test_network_activated_payments_addon_on_multisite(small_site, settings_for):
    set_option(small_site, "active_plugins", php_serialize(OTHER_PLUGINS))
    add_sitemeta(small_site, [(1, php_serialize({PAYMENTS: 1764000000, OTHER_PLUGINS[1]: 1764000000}))])
    check = checks_by_name(settings_for(small_site))["Payments add-on"]
    assert check.status == OK
    assert check.detail == ("mbl-payments/mbl-payments.php is network-activated (active_sitewide_plugins in "
                            "wp_sitemeta): MEMBERLUX PAYMENTS is active")


def test_payments_addon_neither_on_the_site_nor_on_the_network(small_site, settings_for):
    set_option(small_site, "active_plugins", php_serialize(OTHER_PLUGINS))
    add_sitemeta(small_site, [(1, php_serialize({OTHER_PLUGINS[1]: 1764000000}))])
    check = checks_by_name(settings_for(small_site))["Payments add-on"]
    assert check.status == FAIL
    assert check.detail.startswith("MEMBERLUX PAYMENTS is not active: mbl-payments/mbl-payments.php is not in "
                                   "active_plugins nor in active_sitewide_plugins of wp_sitemeta; ")


def test_several_networks_that_disagree_are_not_guessed(small_site, settings_for):
    set_option(small_site, "active_plugins", php_serialize(OTHER_PLUGINS))
    add_sitemeta(small_site, [(1, php_serialize({PAYMENTS: 1764000000})), (2, php_serialize({}))])
    check = checks_by_name(settings_for(small_site))["Payments add-on"]
    assert check.status == FAIL  # base_prefix empty: configured as a single site, and said so
    assert "network-activated on network 1 but not on 2: which one this site belongs to is not known" in check.detail
    assert "This assumes a single site, as wordpress.base_prefix is empty" in check.detail
    multisite = settings_for(small_site, wordpress={"base_prefix": "wp_"})
    check = checks_by_name(multisite)["Payments add-on"]
    assert check.status == WARN and "check Network Admin → Plugins" in check.detail


@pytest.fixture
def readonly_site(mariadb_admin_url, mariadb_database):
    """A MariaDB site without the payments add-on in active_plugins, read through the SELECT-only
    account of sql/readonly-user.sql (which is not granted wp_sitemeta); yields (URL, password) of the account."""
    import pymysql

    from tests.sites import empty_site_schema
    from sidecar.sqlscripts import SQL_DIR, render, run_script

    writer = sa.create_engine(mariadb_database)
    md = empty_site_schema(writer, "wp_")
    with writer.begin() as conn:
        conn.execute(md.tables["wp_options"].insert().values(option_name="active_plugins",
                                                             option_value=php_serialize(OTHER_PLUGINS)))
        conn.exec_driver_sql("CREATE TABLE wp_sitemeta (meta_id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                             "site_id BIGINT NOT NULL, meta_key VARCHAR(255), meta_value LONGTEXT)")
    writer.dispose()
    url = sa.make_url(mariadb_database)
    user, password = f"mls_ro_{uuid.uuid4().hex[:10]}", f"test-{uuid.uuid4().hex}"
    admin = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username or "root",
                            password=url.password or "", database=url.database, autocommit=True)
    try:
        with admin.cursor() as cursor:
            run_script(cursor, render((SQL_DIR / "readonly-user.sql").read_text(), db=url.database, p="wp_",
                                      base_p="wp_", ro_user=user, ro_host="%", ro_password=password))
        yield url.set(username=user, password=None).render_as_string(), password
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


@pytest.mark.mariadb
def test_sitemeta_the_readonly_account_cannot_read_is_named(readonly_site, settings_for):
    url, password = readonly_site
    check = checks_by_name(settings_for(url, wordpress={"db_password": password}))["Payments add-on"]
    assert check.status == FAIL
    assert check.detail.endswith(
        "This assumes a single site, as wordpress.base_prefix is empty; wp_sitemeta cannot be read: SELECT denied, "
        "so a network activation cannot be seen (on a network's main site, set wordpress.base_prefix)")
    multisite = settings_for(url, wordpress={"db_password": password, "base_prefix": "wp_"})
    check = checks_by_name(multisite)["Payments add-on"]
    assert check.status == WARN
    assert check.detail == (
        "mbl-payments/mbl-payments.php is not in active_plugins of this site; wp_sitemeta cannot be read: SELECT "
        "denied, so a network activation cannot be seen: check Network Admin → Plugins, or let the sidecar's MySQL "
        "account SELECT wp_sitemeta. If the add-on is not active, orders through /mbl/v1/order would create users "
        "and completed WooCommerce orders but no keys, so every grant would end failed")


# --- REST over plain http ------------------------------------------------------------------------------

class FakeWordPress:
    """A ``requests`` transport answering like WordPress does: the REST index is public, and
    ``/wp/v2/users/me`` answers with the account, or 401 ``rest_not_logged_in`` when WordPress ignored
    the Application Password (plain http on a site that is not ``WP_ENVIRONMENT_TYPE=local``)."""

    def __init__(self, *, logged_in: bool) -> None:
        self.logged_in = logged_in
        self.urls: list[str] = []

    def client(self, base_url: str):
        import requests

        from sidecar.memberlux.rest import MemberLuxRestClient

        transport = self

        class Adapter(requests.adapters.BaseAdapter):
            def send(self, request, **kwargs):  # requests' adapter interface
                return transport.answer(request)

            def close(self) -> None:
                pass

        session = requests.Session()
        session.mount("http://", Adapter())
        session.mount("https://", Adapter())
        return MemberLuxRestClient(base_url, "mlsidecar", "abcd efgh ijkl mnop qrst uvwx", session=session)

    def answer(self, request):
        import json

        import requests

        self.urls.append(request.url)
        if "/wp/v2/users/me" in request.url and self.logged_in:
            status, body = 200, {"id": 2, "username": "mlsidecar", "capabilities": {"manage_options": True}}
        elif "/wp/v2/users/me" in request.url:
            status, body = 401, {"code": "rest_not_logged_in", "message": "You are not currently logged in.",
                                 "data": {"status": 401}}
        else:
            status, body = 200, {"name": "School", "namespaces": ["oembed/1.0", "mbl/v1", "wp/v2"]}
        response = requests.Response()
        response.status_code, response.url, response.request = status, request.url, request
        response.headers["Content-Type"] = "application/json; charset=UTF-8"
        response._content = json.dumps(body).encode()
        return response


def test_401_over_plain_http_says_that_wordpress_wants_https(small_site, settings_for):
    base = "http://school.example/wp-json"
    site = FakeWordPress(logged_in=False)
    settings = settings_for(small_site, memberlux={"rest_base_url": base})
    checks = checks_by_name(settings, rest_client=site.client(base))
    assert site.urls[-1].startswith("http://school.example/wp-json/wp/v2/users/me")
    check = checks["MemberLux REST API"]
    assert check.status == FAIL
    assert check.detail == (
        "current user: HTTP 401 rest_not_logged_in: You are not currently logged in. — WordPress ignores "
        "Application Passwords over plain http unless the site runs with WP_ENVIRONMENT_TYPE=local, and then answers "
        "401 rest_not_logged_in (or rest_forbidden) without a word about HTTPS: use an https:// "
        "memberlux.rest_base_url, or on a local test site set WP_ENVIRONMENT_TYPE=local; check memberlux.rest_user "
        "(the account's login) and memberlux.rest_password (an Application Password from Users → Profile → "
        "Application Passwords, not the login password); some servers drop the Authorization header "
        "(docs/deployment.md §2)")
    assert checks["REST transport"].status == WARN


def test_401_over_https_gives_only_the_credential_hints(small_site, settings_for):
    base = "https://school.example/wp-json"
    settings = settings_for(small_site, memberlux={"rest_base_url": base})
    checks = checks_by_name(settings, rest_client=FakeWordPress(logged_in=False).client(base))
    check = checks["MemberLux REST API"]
    assert check.status == FAIL
    assert check.detail.startswith("current user: HTTP 401 rest_not_logged_in: You are not currently logged in. — "
                                   "check memberlux.rest_user (the account's login)")
    assert "WP_ENVIRONMENT_TYPE" not in check.detail and "https://" not in check.detail
    assert checks["REST transport"].status == OK and checks["REST transport"].detail == "https to school.example"


def test_plain_http_to_another_host_warns_even_when_it_works(small_site, settings_for):
    base = "http://school.example/wp-json"          # e.g. a site that does run WP_ENVIRONMENT_TYPE=local
    settings = settings_for(small_site, memberlux={"rest_base_url": base})
    checks = checks_by_name(settings, rest_client=FakeWordPress(logged_in=True).client(base))
    assert checks["MemberLux REST API"].status == OK
    check = checks["REST transport"]
    assert check.status == WARN
    assert check.detail == (
        "memberlux.rest_base_url is plain http to school.example: the Application Password, a full administrator "
        "credential, travels in clear on every call; use https:// (WordPress also ignores Application Passwords "
        "over http unless the site runs with WP_ENVIRONMENT_TYPE=local)")


@pytest.mark.parametrize("base, status", [
    ("http://127.0.0.1:8081/wp-json", OK), ("http://localhost/wp-json", OK), ("http://[::1]:8081/wp-json", OK),
    ("https://school.example/wp-json", OK), ("http://10.0.0.5/wp-json", WARN), ("http://wordpress/wp-json", WARN),
])
def test_rest_transport_on_loopback_or_not(settings_for, base, status):
    doctor = Doctor(settings_for("sqlite://", memberlux={"rest_base_url": base}))
    assert doctor.rest_transport()[0] == status


# --- grant alerts ------------------------------------------------------------------------------------------

def _store_grant(settings, status: str, at, **values) -> None:
    from sidecar.store.grant_models import Grant

    engine = store_db.create_store_engine(store_url(settings))
    try:
        with store_db.unit_of_work(store_db.session_factory(engine)) as session:
            session.add(Grant(id="g" + uuid.uuid4().hex[:16], request_hash="h", channel="api", principal="api_key:crm",
                              meta={}, email="learner@example.org", term_id=7, status=status, attempts=1,
                              next_attempt_at=at, created_at=at, updated_at=at, **values))
    finally:
        engine.dispose()


def test_failed_and_unsettled_grants_are_counted_with_where_to_look(small_site, settings_for):
    from datetime import datetime, timedelta, timezone

    from sidecar.clock import FixedClock

    now = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
    settings = settings_for(small_site)
    migrate(settings)
    check = checks_by_name(settings, clock=FixedClock(now))["Grant alerts"]
    assert check.status == OK and "no failed grant" in check.detail
    _store_grant(settings, "failed", now, completed_at=now)
    _store_grant(settings, "failed", now, completed_at=now)
    _store_grant(settings, "unknown", now, settle_until=now - timedelta(minutes=3))    # 180 s > the 165 s grace
    _store_grant(settings, "confirming", now, settle_until=now - timedelta(minutes=2))  # 120 s: still settling
    check = checks_by_name(settings, clock=FixedClock(now))["Grant alerts"]
    assert check.status == WARN
    assert "2 failed (/admin/grants?status=failed: retry or cancel each)" in check.detail
    assert "1 with an outcome still unknown after the settle time (/admin/grants?unsettled=1;" in check.detail


def test_the_alert_email_check_says_why_no_digest_can_go_out(small_site, settings_for, tmp_path):
    settings = settings_for(small_site)
    migrate(settings)
    check = checks_by_name(settings)["Alert e-mail"]
    assert check.status == WARN
    assert check.detail.startswith("no alert digest can go out: smtp.host and smtp.pickup_dir are empty;")
    assert "show only on the first page, here and as webhook events" in check.detail

    mail = {"pickup_dir": str(tmp_path / "mail"), "from_address": "school@example.org"}
    check = checks_by_name(settings_for(small_site, smtp=mail, alerts={"to": "ops@school.example"}))["Alert e-mail"]
    assert check.status == OK
    assert check.detail == ("a digest to ops@school.example (alerts.to) at most every 60 min, each failed or unsettled "
                            "grant once; none sent yet")

    # No alerts.to: the address the seeded levels name for their reminders' digest.
    check = checks_by_name(settings_for(small_site, smtp=mail))["Alert e-mail"]
    assert check.status == OK and "to manager@school.example (the reminders' administrator address" in check.detail

    check = checks_by_name(settings_for(small_site, smtp=mail, alerts={"enabled": False}))["Alert e-mail"]
    assert check.status == OK and check.detail.startswith("off (alerts.enabled = false)")


def test_the_alert_email_check_warns_without_a_recipient_and_after_a_failed_digest(small_site, settings_for, tmp_path):
    from datetime import datetime, timezone

    from sidecar.store.alert_models import AlertDigest

    mail = {"pickup_dir": str(tmp_path / "mail"), "from_address": "school@example.org"}
    settings = settings_for(small_site, smtp=mail)
    migrate(settings)
    engine = store_db.create_store_engine(store_url(settings))
    try:
        with engine.begin() as conn:   # monitoring off for every level: the reminders name no address
            conn.execute(sa.text("INSERT INTO mls_setting_overrides (scope, name, value, updated_at, updated_by) "
                                 "VALUES (:scope, 'enabled', 'false', '2026-11-24 10:00:00', 'test')"),
                         [{"scope": f"monitor.level.{n}"} for n in range(1, 100)])
        check = checks_by_name(settings)["Alert e-mail"]
        assert check.status == WARN
        assert ("no alert digest can go out: alerts.to is empty and no level with monitoring on names an "
                "administrator address for its reminders' digest; set alerts.to") in check.detail

        at = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
        with store_db.unit_of_work(store_db.session_factory(engine)) as session:
            session.add(AlertDigest(created_at=at, state="failed", reason="smtp_permanent", alerts=2,
                                    to_address="ops@school.example", language="en", subject="s", attempts=1,
                                    updated_at=at, last_error="SMTP 550: 5.1.1 no such mailbox"))
        check = checks_by_name(settings_for(small_site, smtp=mail, alerts={"to": "ops@school.example"}))["Alert e-mail"]
        assert check.status == WARN
        assert "the last digest (2026-11-24 10:00 UTC) is failed: SMTP 550: 5.1.1 no such mailbox" in check.detail
    finally:
        engine.dispose()
