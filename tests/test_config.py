"""Configuration: one typed object; every mistake names the key, the value and what is expected."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from sidecar.config import (
    ConfigError,
    Secret,
    describe_settings,
    load_settings,
    settings_from_mapping,
    with_password,
)
from tests.strong_secrets import strong_secret

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {"wordpress": {"db_url": "sqlite:///wp.sqlite"}, "memberlux": {"rest_base_url": "https://s.example/wp-json"}}


def problems_of(data, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(data, environ=environ or {})
    return caught.value.problems


def test_minimal_configuration_gets_documented_defaults():
    settings = settings_from_mapping(MINIMAL, environ={})
    assert settings.wordpress.table_prefix == "wp_"
    assert settings.wordpress.users_prefix == "wp_"
    assert settings.memberlux.order_dialect == "woocommerce"
    assert settings.store.url.startswith("sqlite:///")
    assert settings.schedule.reminders_at == time(9, 0)
    assert settings.log.format == "text"


def test_example_file_is_valid_and_documents_every_key(monkeypatch):
    for name in ("MLS_WP_DB_PASSWORD", "MLS_REST_PASSWORD", "MLS_SMTP_PASSWORD", "MLS_BRIDGE_HMAC_SECRET",
                 "MLS_BRIDGE_KEY_CRM", "MLS_WEB_SECRET_KEY", "MLS_AMO_TOKEN", "MLS_AMO_PATH_TOKEN",
                 "MLS_MEMBERLUX_HOOK_TOKEN"):
        monkeypatch.setenv(name, strong_secret("fake-" + name.lower()))
    settings = load_settings(ROOT / "config.example.toml", environ={})
    text = (ROOT / "config.example.toml").read_text()
    def check(section: str, values: dict) -> None:
        assert f"[{section}]" in text, f"[{section}] undocumented"
        for key, value in values.items():
            if isinstance(value, dict) and key not in ("api_keys", "standard_webhook_secrets", "api_tokens"):
                check(f"{section}.{key}", value)
            elif key in ("api_keys", "standard_webhook_secrets", "api_tokens"):
                assert f"[{section}.{key}]" in text
            else:
                assert f"\n{key} =" in text or f"# {key} =" in text, f"{section}.{key} undocumented"

    for section, values in describe_settings(settings).items():
        check(section, values)


def test_unknown_key_is_named():
    assert problems_of({**MINIMAL, "web": {"prot": 80}}) == ["web.prot: unknown key"]


def test_unknown_section_is_named():
    assert problems_of({**MINIMAL, "mailer": {}}) == ["mailer: unknown key"]


def test_missing_required_key_is_named():
    assert problems_of({"wordpress": {"db_url": "sqlite:///x"}}) == ["memberlux: required key is missing"]


def test_bad_value_names_key_value_and_expectation():
    [line] = problems_of({**MINIMAL, "web": {"port": 70000}})
    assert line.startswith("web.port = 70000: ") and "less than or equal to 65535" in line


def test_bad_timezone_and_prefix_explained():
    lines = problems_of({"wordpress": {"db_url": "sqlite:///x", "timezone": "Moscow", "table_prefix": "wp-"},
                         "memberlux": MINIMAL["memberlux"]})
    assert any(line.startswith("wordpress.timezone = 'Moscow'") and "IANA" in line for line in lines)
    assert any(line.startswith("wordpress.table_prefix = 'wp-'") and "letters, digits and underscores" in line for line in lines)


def test_password_inside_database_url_is_refused_and_not_echoed():
    [line] = problems_of({"wordpress": {"db_url": "mysql+pymysql://u:hunter2@db/wp"}, "memberlux": MINIMAL["memberlux"]})
    assert line.startswith("wordpress.db_url = 'mysql+pymysql://u:***@db/wp'")
    assert "separate *_password key" in line and "hunter2" not in line


def test_all_problems_reported_at_once():
    lines = problems_of({"wordpress": {"db_url": "nope"}, "memberlux": {"rest_base_url": "ftp://x"}, "log": {"format": "xml"}})
    assert {line.split(" ")[0].rstrip(":") for line in lines} == {"wordpress.db_url", "memberlux.rest_base_url", "log.format"}


def test_secret_from_environment_is_resolved_and_never_printed(monkeypatch):
    monkeypatch.setenv("REST_PW", "s3cr3t-value")
    settings = settings_from_mapping({**MINIMAL, "memberlux": {**MINIMAL["memberlux"], "rest_password": "env:REST_PW"}},
                                     environ={})
    assert settings.memberlux.rest_password.reveal() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) and "s3cr3t-value" not in str(describe_settings(settings))


def test_secret_from_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text(strong_secret("from-file") + " \nsecond line ignored\n")
    settings = settings_from_mapping({**MINIMAL, "bridge": {"hmac_secret": f"file:{path}"}}, environ={})
    assert settings.bridge.hmac_secret == Secret(strong_secret("from-file"), "x")


def test_missing_secret_source_is_a_clear_error_without_the_value(tmp_path):
    lines = problems_of({**MINIMAL, "bridge": {"hmac_secret": "env:NOT_SET_ANYWHERE_42",
                                               "api_keys": {"crm": f"file:{tmp_path / 'absent'}"}}})
    assert any(line.startswith("bridge.hmac_secret = <secret>") and "NOT_SET_ANYWHERE_42 is not set" in line for line in lines)
    assert any(line.startswith("bridge.api_keys = <secret>") and "cannot read secret file" in line for line in lines)


def test_environment_overrides_win_and_are_typed():
    settings = settings_from_mapping(MINIMAL, environ={"MLS_WEB__PORT": "9090", "MLS_LOG__FORMAT": "json",
                                                       "MLS_WORDPRESS__INCLUDE_BASKET_KEYS": "false"})
    assert settings.web.port == 9090 and settings.log.format == "json"
    assert settings.wordpress.include_basket_keys is False


def test_unknown_environment_override_is_refused():
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(MINIMAL, environ={"MLS_WEBB__PORT": "1"})
    assert caught.value.problems[0].startswith("MLS_WEBB__PORT: unknown setting")


def test_unrelated_environment_variables_are_ignored():
    settings_from_mapping(MINIMAL, environ={"MLS_TEST_MARIADB_URL": "x", "MLS_CONFIG": "y", "PATH": "/bin"})


def test_toml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[wordpress\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.source == str(path) and "TOML syntax" in caught.value.problems[0]


def test_smtp_sender_required_when_enabled():
    [line] = problems_of({**MINIMAL, "smtp": {"host": "mail.example"}})
    assert line.startswith("smtp = ") and "from_address" in line


def test_password_is_added_to_url_only_for_the_engine():
    url = with_password("mysql+pymysql://ro@db:3306/wp", Secret("p@ss:word", "literal"))
    assert url == "mysql+pymysql://ro:p%40ss%3Aword@db:3306/wp"


def test_reminder_settings_are_checked_when_loaded():
    text = "\n".join(problems_of({**MINIMAL, "reminders": {"renewal_url": "https://s.example/{{ coupon }}",
                                                          "catch_up_days": -1}}))
    assert "reminders.renewal_url" in text and "unknown variable 'coupon'" in text
    assert "reminders.catch_up_days" in text
    [line] = problems_of({**MINIMAL, "reminders": {"retry_base_seconds": 600, "retry_max_seconds": 60}})
    assert "retry_max_seconds must not be smaller than retry_base_seconds" in line


def test_alert_settings_are_checked_when_loaded():
    problems = problems_of({**MINIMAL, "alerts": {"to": "ops@school.example, boss@school.example",
                                                  "digest_interval_minutes": 1, "language": "de"}})
    text = "\n".join(problems)
    assert "alerts.to = 'ops@school.example, boss@school.example': expected one e-mail address" in text
    assert "alerts.digest_interval_minutes = 1:" in text and "alerts.language = 'de':" in text
    settings = settings_from_mapping(MINIMAL, environ={"MLS_ALERTS__TO": " ops@school.example ",
                                                      "MLS_ALERTS__DIGEST_INTERVAL_MINUTES": "30"})
    assert (settings.alerts.to, settings.alerts.digest_interval_minutes) == ("ops@school.example", 30)
    defaults = settings_from_mapping(MINIMAL, environ={}).alerts
    assert (defaults.enabled, defaults.to, defaults.digest_interval_minutes, defaults.language) == (True, "", 60, "")


def test_each_time_zone_key_accepts_only_its_own_fallback_word():
    assert "wordpress.timezone" in "\n".join(problems_of({**MINIMAL, "wordpress": {**MINIMAL["wordpress"], "timezone": "site"}}))
    assert "schedule.timezone" in "\n".join(problems_of({**MINIMAL, "schedule": {"timezone": ""}}))
    settings = settings_from_mapping({**MINIMAL, "schedule": {"timezone": "Europe/Moscow"}}, environ={})
    assert settings.schedule.timezone == "Europe/Moscow"


def test_the_welcome_email_is_on_by_default_exactly_when_mail_can_go_out():
    site = {"wordpress": {"db_url": "sqlite:///wp.sqlite"}, "memberlux": {"rest_base_url": "https://s.example/wp-json"}}
    smtp = {"host": "smtp.example.org", "from_address": "school@example.org"}
    pickup = {"pickup_dir": "/tmp/mail", "from_address": "school@example.org"}

    def welcome(**sections) -> bool | None:
        return settings_from_mapping({**site, **sections}, environ={}).bridge.welcome_email.enabled

    assert welcome() is False
    assert welcome(smtp=smtp) is True and welcome(smtp=pickup) is True
    assert welcome(smtp=smtp, bridge={"welcome_email": {"enabled": False}}) is False     # said, so kept
    assert welcome(bridge={"welcome_email": {"enabled": True}}) is True
    assert welcome(smtp=smtp, bridge={"welcome_email": {"subject": "Добро пожаловать"}}) is True


def test_the_dashboard_interval_is_checked_when_loaded():
    assert settings_from_mapping(MINIMAL, environ={}).schedule.dashboard_interval_minutes == 60
    assert problems_of({**MINIMAL, "schedule": {"dashboard_interval_minutes": 4}}) == [
        "schedule.dashboard_interval_minutes = 4: Input should be greater than or equal to 5"]
    assert problems_of({**MINIMAL, "schedule": {"dashboard_interval_minutes": 1441}}) == [
        "schedule.dashboard_interval_minutes = 1441: Input should be less than or equal to 1440"]
    [line] = problems_of(MINIMAL, environ={"MLS_SCHEDULE__DASHBOARD_INTERVAL_MINUTES": "hourly"})
    assert line.startswith("schedule.dashboard_interval_minutes = 'hourly'") and "valid integer" in line
    settings = settings_from_mapping(MINIMAL, environ={"MLS_SCHEDULE__DASHBOARD_INTERVAL_MINUTES": "15"})
    assert settings.schedule.dashboard_interval_minutes == 15
