"""`mlsidecar demo` starts the emulated site and the sidecar with no setup, and they work together."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests


@pytest.mark.slow
def test_demo_starts_serves_and_stops(tmp_path):
    with running_demo(tmp_path) as text:
        sidecar = re.search(r"sidecar:\s+(http://\S+?)/\s", text).group(1)
        site = re.search(r"emulated site:\s+(http://\S+?)/wp-json/", text).group(1)
        assert "login 'admin'" in text and re.search(r"ready in [0-9.]+ s", text)
        # Reminders wait for an approval: the banner says where to review and approve them (its wording for
        # levels that wait: tests/reminders/test_approval.py::test_the_demo_banner_says_where_to_review_and_approve).
        assert re.search(rf"reminders: .*{re.escape(sidecar)}/reminders/approvals", text)
        assert requests.get(sidecar + "/healthz", timeout=10).json() == {"status": "ok"}
        assert requests.get(sidecar + "/readyz", timeout=10).json()["status"] == "ready"
        assert "mbl/v1" in requests.get(site + "/wp-json/", timeout=10).json()["namespaces"]

        # The CLI in a second shell, on the configuration the demo prints.
        config = re.search(r"export MLS_CONFIG=(\S+)", text).group(1)
        assert config == str((tmp_path / "demo" / "mlsidecar.toml").resolve())
        env = {**os.environ, "MLS_CONFIG": config}
        doctor = cli(env, "doctor")
        assert doctor.returncode == 0 and "FAIL" not in doctor.stdout, doctor.stdout + doctor.stderr
        assert "SMTP" in doctor.stdout and "letters are written as .eml files" in doctor.stdout
        # The other commands run on the demo's configuration in tests/test_documented_commands.py; here one
        # that reads both databases while the demo writes them.
        done = cli(env, "remind", "--dry-run")
        assert done.returncode == 0, (done.stdout, done.stderr)

        # /metrics with the token the printed curl line reads; the welcome e-mail is on.
        token_file = re.search(r"Bearer \$\(cat (\S+)\)", text).group(1)
        token = Path(token_file).read_text().strip()
        assert requests.get(sidecar + "/metrics", timeout=10).status_code == 401
        metrics = requests.get(sidecar + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert metrics.status_code == 200 and "mlsidecar_" in metrics.text
        assert "enabled = true" in Path(config).read_text().split("[bridge.welcome_email]")[1].split("[")[0]
        assert oct(Path(token_file).stat().st_mode & 0o777) == "0o600"

        # The dashboard's comparison is there before the first page: the demo computed it before serving.
        with sqlite3.connect(tmp_path / "demo" / "store.sqlite") as db:
            windows = [row[0] for row in db.execute("SELECT window_days FROM mls_dashboard_snapshots ORDER BY window_days")]
        assert windows == [7, 14, 30]

        # The sleepers trend has a past from the start: the first refresh reconstructed the 12 weeks before it.
        history = _reconstructed_days(tmp_path / "demo" / "store.sqlite")
        assert history and all(len(days) == 83 for days in history.values()), history
        assert any(len(set(days.values())) > 1 for days in history.values()), "a flat history in every level"

        # No hook of the seeded site points at a CRM that does not exist here.
        with sqlite3.connect(tmp_path / "demo" / "wordpress.sqlite") as db:
            hooks = [row[0] for row in db.execute("SELECT destination FROM wp_memberlux_hook")]
            program_hooks = [row[0] for row in db.execute(
                "SELECT meta_value FROM wp_postmeta WHERE meta_key = 'mlp_webhook_url' AND meta_value != ''")]
        assert hooks and all("/hooks/memberlux/" in hook for hook in hooks), hooks
        assert program_hooks == []


@contextmanager
def running_demo(tmp_path: Path, *options: str) -> Iterator[str]:
    """Start `mlsidecar demo` (40 learners, 3 levels, free ports) and yield its banner once it is ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar.cli", "demo", *options, "--port", "0", "--emulator-port", "0", "--users", "40",
         "--levels", "3", "--data-dir", str(tmp_path / "demo"), "--exit-after", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "Ctrl-C" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(120), "demo did not start:\n" + "".join(lines) + process.stderr.read()
        yield "".join(lines)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _reconstructed_days(store: Path, wait_seconds: float = 60.0) -> dict[int, dict[str, int]]:
    """The reconstructed daily counts per level, once the worker's first refresh has stored them."""
    import time

    give_up = time.monotonic() + wait_seconds
    while True:
        with sqlite3.connect(store) as db:
            rows = db.execute("SELECT term_id, day, sleepers FROM mls_sleeper_counts WHERE reconstructed").fetchall()
            levels = db.execute("SELECT count(*) FROM mls_sleeper_refreshes").fetchone()[0]
        history: dict[int, dict[str, int]] = {}
        for term_id, day, sleepers in rows:
            history.setdefault(term_id, {})[day] = sleepers
        if (levels and len(history) == levels) or time.monotonic() > give_up:
            return history
        time.sleep(0.5)


def cli(env: dict, *words: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sidecar.cli", *words], env=env, capture_output=True, text=True,
                          timeout=120)


def test_fresh_starts_with_empty_mail_folders_and_keeps_the_secrets(tmp_path):
    from sidecar.demo import MAIL_DIR, SITE_MAIL_DIR, _prepare_site, demo_secrets

    data = tmp_path / "demo"
    data.mkdir()
    secrets = {name: path.read_text() for name, path in demo_secrets(data).items()}
    for folder in (MAIL_DIR, SITE_MAIL_DIR):
        (data / folder).mkdir()
        (data / folder / "old-letter.eml").write_text("From: old")
    _prepare_site(data, users=10, levels=2, seed=1, fresh=True)
    assert not (data / MAIL_DIR).exists() and not (data / SITE_MAIL_DIR).exists()
    assert {name: path.read_text() for name, path in demo_secrets(data).items()} == secrets


@pytest.mark.slow
def test_demo_shadow_rehearsal_mirrors_the_old_plugins_requests_to_the_bridge(tmp_path):
    """`demo --shadow`: the printed request reaches the old plugin's stand-in, which grants, and its copy
    becomes a shadow grant the bridge watches (the outcome comes after the demo's 2-minute window)."""
    with running_demo(tmp_path, "--shadow") as text:
        session = "\n".join(line.strip() for line in text.splitlines()
                            if line.strip().startswith(("body=", "sig=", "curl", "-H \"X-MLGB-Signature")))
        assert "/wp-json/mlgb/v1/grant" in session and "openssl dgst" in session
        answer = subprocess.run(["bash", "-c", session.replace("\\\n", " ")], capture_output=True, text=True, timeout=60)
        assert answer.stdout.strip() == '{"ok": true}' or answer.stdout.strip() == '{"ok":true}', answer
        config = re.search(r"export MLS_CONFIG=(\S+)", text).group(1)
        assert 'mode = "shadow"' in Path(config).read_text()
        report = cli({**os.environ, "MLS_CONFIG": config}, "shadow", "report", "--format", "json")
        assert report.returncode == 0, report.stderr
        assert json.loads(report.stdout)["watching"] == 1
        with sqlite3.connect(tmp_path / "demo" / "wordpress.sqlite") as db:
            granted = db.execute("SELECT COUNT(*) FROM wp_memberlux_term_keys k JOIN wp_users u ON u.ID = k.user_id "
                                 "WHERE u.user_email = 'shadow.learner@example.com'").fetchone()[0]
        assert granted == 1
