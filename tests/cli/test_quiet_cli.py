"""The command line is quiet by default: what start-up finds about the site (tables reflected, optional
modules missing) is `mlsidecar doctor`'s to report, and shows on stderr only with -v; errors always print.
The services (serve, worker) log at the configured level."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from sidecar.cliutil import log_level, shows_startup_report
from tests.cli.support import run
from tests.stores import migrate_store

WEBHOOKS_MISSING = "API & webhooks module tables not found (wp_memberlux_hook, wp_memberlux_hook_action)"


@pytest.fixture
def config(small_site: str, tmp_path: Path) -> str:
    """A configuration for a copy of the demo site without MemberLux's webhooks module."""
    engine = sa.create_engine(small_site)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE wp_memberlux_hook_action")
        conn.exec_driver_sql("DROP TABLE wp_memberlux_hook")
    engine.dispose()
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    migrate_store(store)
    path = tmp_path / "mlsidecar.toml"
    path.write_text(f'[wordpress]\ndb_url = "{small_site}"\n'
                    '[memberlux]\nrest_base_url = "http://127.0.0.1:9/wp-json"\nrest_user = "svc"\n'
                    'rest_password = "env:TEST_REST_PW"\n'
                    f'[store]\nurl = "{store}"\n')
    return str(path)


def mlsidecar(config: str, *args: str):
    return run("--config", config, *args, env={"TEST_REST_PW": "not-a-real-password"})


def test_a_command_prints_its_output_and_nothing_about_start_up(config):
    result = mlsidecar(config, "sleepers", "list", "--level", "7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no sleepers match"  # never refreshed
    assert result.stderr == ""


def test_verbose_shows_what_start_up_found(config):
    result = mlsidecar(config, "-v", "sleepers", "list", "--level", "7")
    assert result.returncode == 0, result.stderr
    assert f"WARNING sidecar.bootstrap [-] {WEBHOOKS_MISSING}" in result.stderr
    assert "INFO    sidecar.bootstrap [-] reflected " in result.stderr
    assert result.stdout.strip() == "no sleepers match"


def test_doctor_reports_the_missing_module_as_a_check(config):
    result = mlsidecar(config, "doctor")
    line = next(line for line in result.stdout.splitlines() if "Optional modules" in line)
    assert line.startswith("WARN") and WEBHOOKS_MISSING in line
    assert "WARNING" not in result.stderr


def test_errors_still_print(config):
    result = mlsidecar(config, "explain", "--user", "999999", "--level", "7")
    assert result.returncode == 1
    assert "no WordPress user with id 999999" in result.stderr
    assert WEBHOOKS_MISSING not in result.stderr


@pytest.mark.parametrize(("configured", "verbose", "service", "level"), [
    ("INFO", 0, False, "WARNING"),     # a command: warnings and errors of its own work
    ("DEBUG", 0, False, "WARNING"),
    ("ERROR", 0, False, "ERROR"),      # configured quieter still: kept
    ("INFO", 1, False, "INFO"),
    ("DEBUG", 1, False, "DEBUG"),
    ("WARNING", 2, False, "DEBUG"),
    ("INFO", 0, True, "INFO"),         # a service: the configured level
    ("WARNING", 0, True, "WARNING"),
    ("WARNING", 1, True, "INFO"),
])
def test_log_level_of_a_command(configured, verbose, service, level):
    assert log_level(configured, verbose, service=service) == level


def test_the_start_up_report_shows_in_services_and_with_verbose_only():
    assert not shows_startup_report(0, service=False)
    assert shows_startup_report(1, service=False)
    assert shows_startup_report(0, service=True)
