"""`mlsidecar demo`: an emulated MemberLux site with realistic data and the sidecar, in one process.

Nothing to install or configure: the site lives in a SQLite file under ``--data-dir``, the emulator
serves its REST API on one port, the sidecar (web app + scheduler) on another.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import click
import sqlalchemy as sa

from sidecar.config import load_settings
from sidecar.logs import configure_logging

log = logging.getLogger(__name__)

SITE_FILE = "wordpress.sqlite"
STORE_FILE = "store.sqlite"
MARKER_FILE = "seeded.txt"


MAIL_DIR = "mail"
#: What the emulated site itself mails (order and certificate e-mails), kept apart from the sidecar's letters.
SITE_MAIL_DIR = "site-mail"


CONFIG_FILE = "mlsidecar.toml"
#: One file per secret (mode 0600), referenced from the configuration as ``file:`` secrets.
SECRETS_DIR = "secrets"
_SECRETS = {
    "app-password": lambda: secrets.token_urlsafe(18),        # the emulated site's Application Password
    "api-key": lambda: "demo-" + secrets.token_urlsafe(32),    # the bridge's API key for CRM calls
    "hook-token": lambda: secrets.token_urlsafe(32),           # the path token of MemberLux's own webhooks
    "secret-key": lambda: secrets.token_hex(32),               # sessions and unsubscribe links
    "metrics-token": lambda: secrets.token_urlsafe(32),        # read-only API token: /metrics, /api/v1/sleepers
    "hmac-secret": lambda: secrets.token_urlsafe(32),          # the legacy plugin's shared secret (demo --shadow)
}
#: The watch window of the shadow rehearsal: short, so that outcomes show while one looks.
DEMO_SHADOW_WINDOW_MINUTES = 2


def demo_secrets(data_dir: Path) -> dict[str, Path]:
    """The demo's secrets, each in its own file: made on the first run and kept, so that a second shell
    (the CLI, doctor, curl) can use what the running demo uses."""
    folder = data_dir / SECRETS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = {}
    for name, make in _SECRETS.items():
        path = (folder / name).resolve()
        if not path.exists() or not path.read_text(encoding="utf-8").strip():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(make() + "\n")
        paths[name] = path
    return paths


def read_secret(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def demo_config(data_dir: Path, emulator_url: str, api_login: str, host: str, port: int,
                secret_files: dict[str, Path], *, shadow: bool = False) -> str:
    """The demo's configuration as TOML: the file the demo itself runs on, and the one to export."""
    root = data_dir.resolve()

    def ref(name: str) -> str:
        return _toml_string(f"file:{secret_files[name]}")

    return f"""# Written by `mlsidecar demo` at each start (edits are overwritten): the running demo uses exactly this.
# In another shell:  export MLS_CONFIG={root / CONFIG_FILE}

[wordpress]
db_url = {_toml_string(f"sqlite:///{root / SITE_FILE}")}
table_prefix = "wp_"

[memberlux]
rest_base_url = {_toml_string(emulator_url + "/wp-json")}
rest_user = {_toml_string(api_login)}
rest_password = {ref("app-password")}
timeout_seconds = 60

[store]
url = {_toml_string(f"sqlite:///{root / STORE_FILE}")}

[web]
host = {_toml_string(host)}
port = {port}
public_url = {_toml_string(f"http://{host}:{port}")}
secret_key = {ref("secret-key")}
api_tokens = {{ metrics = {ref("metrics-token")} }}

[bridge]
api_keys = {{ demo = {ref("api-key")} }}
retry_base_seconds = 5
{_shadow_lines(ref("hmac-secret")) if shadow else ""}
[bridge.welcome_email]
enabled = true

[webhooks]
memberlux_path_token = {ref("hook-token")}

# Reminders and welcome letters land as .eml files to open with any mail client.
[smtp]
pickup_dir = {_toml_string(str(root / MAIL_DIR))}
from_address = "school@demo.example"
from_name = "Демо-школа"

[log]
format = "text"
level = "INFO"
"""


def _shadow_lines(secret_ref: str) -> str:
    return (f"# The rehearsal (demo --shadow): requests mirrored from the legacy plugin's route are watched, not ordered.\n"
            f"hmac_secret = {secret_ref}\nmode = \"shadow\"\nshadow_window_minutes = {DEMO_SHADOW_WINDOW_MINUTES}\n")


def _legacy_request_example(emulator_url: str, secret_file: Path, example_email: str, term_id: int) -> list[str]:
    """A shell session that signs a request the way the old amoCRM relay does and sends it to the old plugin."""
    body = f'{{"email":"{example_email}","key":{{"term_id":{term_id},"duration":1,"units":"months"}}}}'
    return [f"    body='{body}'; ts=$(date +%s)",
            f"    sig=$(printf '%s.%s' \"$ts\" \"$body\" | openssl dgst -sha256 -hmac \"$(cat {secret_file})\" | sed 's/^.* //')",
            f"    curl -s -X POST '{emulator_url}/wp-json/mlgb/v1/grant' -H \"X-MLGB-Timestamp: $ts\" \\",
            "         -H \"X-MLGB-Signature: $sig\" -H 'Content-Type: application/json' -d \"$body\""]


def _toml_string(value: str) -> str:
    # A JSON string is a TOML basic string (the same escapes: \\, \", \n, \uXXXX).
    return json.dumps(value, ensure_ascii=False)


def _free_port(host: str) -> int:
    # The public URL (links in e-mails) must name the real port, so pick it before building the app.
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _prepare_site(data_dir: Path, users: int, levels: int, seed: int, fresh: bool) -> dict:
    from sidecar.devstack.site import build_demo_site

    site_file, marker = data_dir / SITE_FILE, data_dir / MARKER_FILE
    wanted = f"users={users} levels={levels} seed={seed}"
    if fresh or not site_file.exists() or not marker.exists() or marker.read_text().split("\n")[0] != wanted:
        for stale in (site_file, data_dir / STORE_FILE):
            stale.unlink(missing_ok=True)
        for letters in (data_dir / MAIL_DIR, data_dir / SITE_MAIL_DIR):   # a new site, no old letters
            shutil.rmtree(letters, ignore_errors=True)
        started = time.monotonic()
        click.echo(f"building the demo site ({users} learners, {levels} levels, seed {seed})…", err=True)
        # No hooks to a CRM on 127.0.0.1:9, which the demo does not have: each order would fail to reach it.
        summary = build_demo_site(f"sqlite:///{site_file.resolve()}", users=users, levels=levels, seed=seed,
                                  today=datetime.now(timezone.utc).date(), fresh=True, webhook_url="",
                                  program_webhook_url="")
        marker.write_text(f"{wanted}\nbuilt {date.today()} in {time.monotonic() - started:.1f} s\n")
        return dataclasses.asdict(summary)
    return {}


def _example_grant(runtime) -> str | None:
    from sidecar.bridge.service import BridgeService

    products = [p for p in BridgeService(runtime).catalog.products()
                if p.status == "publish" and not p.unlimited and p.level_id]
    if not products:
        return None
    product = products[0]
    units = "month" if product.units == "months" else "day"
    return ('{"user":{"email":"new.learner@example.com","first_name":"Анна"},'
            f'"grant":{{"term_id":{product.level_id},"duration":{product.duration},"units":"{units}"}},'
            '"external_id":"demo-deal-1"}')


def _register_hook(site_engine: sa.Engine, url: str) -> None:
    """Point the emulated site's MemberLux webhook at this run's sidecar, as an admin would in
    MemberLux → Webhooks (the demo's own fake WordPress; a real site is never written to). A demo
    folder seeded before the demo stopped seeding it keeps a hook to a CRM on port 9: that one goes too."""
    from sidecar.devstack.seed import DEFAULT_WEBHOOK_URL

    hook = sa.Table("wp_memberlux_hook", sa.MetaData(), autoload_with=site_engine)
    action = sa.Table("wp_memberlux_hook_action", sa.MetaData(), autoload_with=site_engine)
    with site_engine.begin() as conn:
        old = [row.id for row in conn.execute(sa.select(hook.c.id).where(
            hook.c.destination.like("%/hooks/memberlux/%") | (hook.c.destination == DEFAULT_WEBHOOK_URL)))]
        if old:
            conn.execute(action.delete().where(action.c.hook_id.in_(old)))
            conn.execute(hook.delete().where(hook.c.id.in_(old)))
        hook_id = conn.execute(hook.insert().values(destination=url, sort=99)).inserted_primary_key[0]
        conn.execute(action.insert().values(hook_id=hook_id, action="all"))


def _import_legacy_programs(runtime) -> int:
    """The demo site carries the old bundle plugin's data: import it once, as an operator would."""
    from sidecar.programs.catalog import ProgramCatalog
    from sidecar.programs.legacy import apply_import, plan_import

    if ProgramCatalog(runtime).all():
        return 0
    plan = plan_import(runtime)
    if plan.blocking:
        return 0
    return apply_import(runtime, plan, actor="demo")["programs"]


def reminders_banner(runtime, sidecar_url: str) -> list[str]:
    """The start banner's lines on reminders: none is mailed for a level until it is approved, and where
    to review and approve them (the page, the commands)."""
    from sidecar.monitor.settings import MonitorSettings
    from sidecar.reminders.approval import approved_levels, sends_reminders

    levels = [term_id for term_id, level in MonitorSettings(runtime).all_levels().items() if sends_reminders(level)]
    with runtime.sessions() as session:
        approved = approved_levels(session)
    waiting = [term_id for term_id in levels if term_id not in approved]
    page = f"{sidecar_url}/reminders/approvals"
    if not levels:
        return [f"  reminders:      no level sends any (monitoring off or no letter set): nothing to approve ({page})"]
    if not waiting:
        return [f"  reminders:      every level with letters is approved: they go out daily ({page})"]
    example = waiting[0]
    return [
        f"  reminders:      nothing is mailed for a level until it is approved ({len(waiting)} of {len(levels)} "
        "level(s) with letters wait);",
        f"                  review what each would send and approve it at {page}",
        f"                  or: mlsidecar remind --dry-run --level {example}, then "
        f"mlsidecar remind approve --level {example} --letters N",
    ]


def run_demo(*, host: str, port: int, emulator_port: int, data_dir: Path, users: int, levels: int, seed: int,
             fresh: bool, exit_after: float | None = None, shadow: bool = False) -> None:
    from sidecar.app import create_app
    from sidecar.bootstrap import build_runtime
    from sidecar.devstack.emulator import create_emulator_app
    from sidecar.devstack.seed import DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD, DEMO_API_LOGIN
    from sidecar.devstack.server import serve_in_thread
    from sidecar.store import db as store_db
    from sidecar.dashboard.job import compute_job as dashboard_job
    from sidecar.jobs import DASHBOARD_JOB
    from sidecar.worker import DASHBOARD_LEASE, build_outbox, build_scheduler, run_leased

    started = time.monotonic()
    configure_logging("text", "INFO")
    port = port or _free_port(host)
    data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_site(data_dir, users, levels, seed, fresh)

    secret_files = demo_secrets(data_dir)
    app_password = read_secret(secret_files["app-password"])
    site_engine = sa.create_engine(f"sqlite:///{(data_dir / SITE_FILE).resolve()}",
                                   connect_args={"timeout": 30, "check_same_thread": False})
    legacy = {"legacy_hmac_secret": read_secret(secret_files["hmac-secret"]),
              "legacy_mirror_url": f"http://{host}:{port}/wp-json/mlgb/v1/grant"} if shadow else {}
    emulator = create_emulator_app(site_engine, prefix="wp_", app_user=DEMO_API_LOGIN, app_password=app_password,
                                   dialect="both", mail_dir=data_dir / SITE_MAIL_DIR, **legacy)
    emulator_url, stop_emulator = serve_in_thread(emulator, host=host, port=emulator_port)

    config_file = data_dir.resolve() / CONFIG_FILE
    config_file.write_text(demo_config(data_dir, emulator_url, DEMO_API_LOGIN, host, port, secret_files, shadow=shadow),
                           encoding="utf-8")
    settings = load_settings(config_file, environ={})
    api_key, hook_token = read_secret(secret_files["api-key"]), read_secret(secret_files["hook-token"])
    store_engine = store_db.create_store_engine(f"sqlite:///{(data_dir / STORE_FILE).resolve()}")
    store_db.upgrade(store_engine)
    store_engine.dispose()
    runtime = build_runtime(settings)
    _register_hook(site_engine, f"http://{host}:{port}/hooks/memberlux/{hook_token}")
    imported = _import_legacy_programs(runtime)
    # The dashboard's comparison before the first page: the worker's own first run comes in the background.
    run_leased(runtime, DASHBOARD_JOB, dashboard_job, DASHBOARD_LEASE)
    scheduler = build_scheduler(runtime, background=True)
    scheduler.start()
    outbox = build_outbox(runtime)
    outbox.start()
    sidecar_url, stop_sidecar = serve_in_thread(create_app(runtime), host=host, port=port)

    click.echo("")
    click.echo(f"  mlsidecar demo is running (ready in {time.monotonic() - started:.1f} s)")
    click.echo(f"  sidecar:        {sidecar_url}/")
    click.echo(f"  emulated site:  {emulator_url}/wp-json/  (MemberLux {runtime.reader.option('wpm_version')})")
    click.echo(f"  demo admin:     login '{DEMO_ADMIN_LOGIN}', password '{DEMO_ADMIN_PASSWORD}'")
    click.echo(f"  data:           {data_dir.resolve()}  (delete it or pass --fresh to rebuild)")
    example = _example_grant(runtime)
    if shadow:
        level = next((lv.term_id for lv in runtime.reader.levels()), 1)
        click.echo(f"  shadow rehearsal: the old plugin answers at {emulator_url}/wp-json/mlgb/v1/grant and every")
        click.echo("  request is mirrored to the bridge, which only watches; send one as the old amoCRM relay would:")
        for line in _legacy_request_example(emulator_url, secret_files["hmac-secret"], "shadow.learner@example.com", level):
            click.echo(line)
        click.echo(f"  outcomes after {DEMO_SHADOW_WINDOW_MINUTES} min: {sidecar_url}/admin/shadow  or  mlsidecar shadow report")
    elif example:
        click.echo("  grant access as a CRM would (the API key is kept in secrets/api-key):")
        click.echo(f"    curl -s -X POST '{sidecar_url}/api/v1/grants?wait=15' -H 'X-API-Key: {api_key}' \\")
        click.echo(f"         -H 'Content-Type: application/json' -d '{example}'")
    if imported:
        click.echo(f"  programs:       {imported} imported from the legacy bundle plugin's data ({sidecar_url}/programs)")
    for line in reminders_banner(runtime, sidecar_url):
        click.echo(line)
    click.echo(f"  letters:        written to {(data_dir / MAIL_DIR).resolve()} as .eml files")
    click.echo(f"  site's mail:    written to {(data_dir / SITE_MAIL_DIR).resolve()} as .eml files")
    click.echo(f"  metrics:        curl -s {sidecar_url}/metrics -H \"Authorization: Bearer $(cat {secret_files['metrics-token']})\"")
    click.echo("  the CLI against this demo, in another shell:")
    click.echo(f"    export MLS_CONFIG={config_file}")
    click.echo("    mlsidecar doctor; mlsidecar grants list; mlsidecar sleepers list; mlsidecar remind --dry-run")
    click.echo("  Ctrl-C stops everything.")
    click.echo("")
    stop = threading.Event()
    # A service manager or `kill` stops the demo as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(exit_after) if exit_after is not None else stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.shutdown(wait=False)
        outbox.stop()
        stop_sidecar()
        emulator.extensions["mbl_emulator"].shutdown()
        stop_emulator()
        runtime.close()
        site_engine.dispose()
