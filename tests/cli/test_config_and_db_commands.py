"""`mlsidecar config check` and `mlsidecar db ...`: what an operator sees, and the exit codes."""

from __future__ import annotations

import json

import sqlalchemy as sa

from tests.cli.support import GOOD, run, write_config

def test_config_check_prints_settings_without_secrets(tmp_path):
    result = run("--config", str(write_config(tmp_path)), "config", "check", env={"TEST_REST_PW": "pw-123456"})
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout
    assert "pw-123456" not in result.stdout + result.stderr
    assert '"<secret from env>"' in result.stdout


def test_config_check_json(tmp_path):
    result = run("--config", str(write_config(tmp_path)), "config", "check", "--format", "json",
                 env={"TEST_REST_PW": "x"})
    assert json.loads(result.stdout)["wordpress"]["table_prefix"] == "wp_"


def test_bad_config_exits_2_naming_key_and_value(tmp_path):
    path = write_config(tmp_path, GOOD + '\n[web]\nport = "eighty"\nbogus = 1\n')
    result = run("--config", str(path), "config", "check", env={"TEST_REST_PW": "x"})
    assert result.returncode == 2
    assert "web.port = 'eighty'" in result.stderr and "web.bogus: unknown key" in result.stderr


def test_environment_override_error_exits_2(tmp_path):
    result = run("--config", str(write_config(tmp_path)), "config", "check",
                 env={"TEST_REST_PW": "x", "MLS_WEB__PORT": "0"})
    assert result.returncode == 2 and "web.port = 0" in result.stderr


def test_missing_config_file_exits_2_with_hint(tmp_path):
    result = run("config", "check", cwd=tmp_path)
    assert result.returncode == 2 and "config.example.toml" in result.stderr


def test_db_upgrade_then_current(tmp_path):
    config = str(write_config(tmp_path))
    env = {"TEST_REST_PW": "x"}
    before = run("--config", config, "db", "current", env=env)
    assert before.returncode == 1 and "current: none" in before.stdout
    upgraded = run("--config", config, "db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "store: empty -> " in upgraded.stdout
    after = run("--config", config, "db", "current", env=env)
    assert after.returncode == 0
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    assert "mls_audit_events" in sa.inspect(engine).get_table_names()


def test_db_upgrade_refuses_the_wordpress_database(tmp_path):
    path = tmp_path / "mlsidecar.toml"
    path.write_text(GOOD.format(wp=tmp_path / "wp.sqlite", store=tmp_path / "wp.sqlite"))
    result = run("--config", str(path), "db", "upgrade", env={"TEST_REST_PW": "x"})
    assert result.returncode == 3 and "points at the WordPress database" in result.stderr
