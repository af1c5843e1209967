"""`mlsidecar demo`: an emulated MemberLux site with realistic data and the sidecar, in one process.

Nothing to install or configure: the site lives in a SQLite file under ``--data-dir``, the emulator
serves its REST API on one port, the sidecar (web app + scheduler) on another.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import signal
import socket
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import click
import sqlalchemy as sa

from sidecar.config import settings_from_mapping
from sidecar.logs import configure_logging

log = logging.getLogger(__name__)

SITE_FILE = "wordpress.sqlite"
STORE_FILE = "store.sqlite"
MARKER_FILE = "seeded.txt"


MAIL_DIR = "mail"
#: What the emulated site itself mails (order and certificate e-mails), kept apart from the sidecar's letters.
SITE_MAIL_DIR = "site-mail"


def demo_settings(data_dir: Path, emulator_url: str, api_login: str, app_password: str, port: int, host: str,
                  api_key: str, hook_token: str | None = None):
    return settings_from_mapping({
        "wordpress": {"db_url": f"sqlite:///{(data_dir / SITE_FILE).resolve()}", "table_prefix": "wp_"},
        "memberlux": {"rest_base_url": emulator_url + "/wp-json", "rest_user": api_login,
                      "rest_password": app_password, "timeout_seconds": 60},
        "store": {"url": f"sqlite:///{(data_dir / STORE_FILE).resolve()}"},
        "web": {"host": host, "port": port, "public_url": f"http://{host}:{port}",
                "secret_key": secrets.token_hex(32)},
        "bridge": {"api_keys": {"demo": api_key}, "retry_base_seconds": 5},
        "webhooks": {"memberlux_path_token": hook_token or ""},
        # Reminders and welcome letters land as .eml files to open with any mail client.
        "smtp": {"pickup_dir": str((data_dir / MAIL_DIR).resolve()), "from_address": "school@demo.example",
                 "from_name": "Демо-школа"},
        "log": {"format": "text", "level": "INFO"},
    }, environ={}, source="demo settings")


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
        started = time.monotonic()
        click.echo(f"building the demo site ({users} learners, {levels} levels, seed {seed})…", err=True)
        summary = build_demo_site(f"sqlite:///{site_file.resolve()}", users=users, levels=levels, seed=seed,
                                  today=datetime.now(timezone.utc).date(), fresh=True)
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
    MemberLux → Webhooks (the demo's own fake WordPress; a real site is never written to)."""
    hook = sa.Table("wp_memberlux_hook", sa.MetaData(), autoload_with=site_engine)
    action = sa.Table("wp_memberlux_hook_action", sa.MetaData(), autoload_with=site_engine)
    with site_engine.begin() as conn:
        old = [row.id for row in conn.execute(sa.select(hook.c.id).where(hook.c.destination.like("%/hooks/memberlux/%")))]
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


def run_demo(*, host: str, port: int, emulator_port: int, data_dir: Path, users: int, levels: int, seed: int,
             fresh: bool, exit_after: float | None = None) -> None:
    from sidecar.app import create_app
    from sidecar.bootstrap import build_runtime
    from sidecar.devstack.emulator import create_emulator_app
    from sidecar.devstack.seed import DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD, DEMO_API_LOGIN
    from sidecar.devstack.server import serve_in_thread
    from sidecar.store import db as store_db
    from sidecar.worker import build_outbox, build_scheduler

    started = time.monotonic()
    configure_logging("text", "INFO")
    port = port or _free_port(host)
    data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_site(data_dir, users, levels, seed, fresh)

    app_password = secrets.token_urlsafe(18)
    site_engine = sa.create_engine(f"sqlite:///{(data_dir / SITE_FILE).resolve()}",
                                   connect_args={"timeout": 30, "check_same_thread": False})
    emulator = create_emulator_app(site_engine, prefix="wp_", app_user=DEMO_API_LOGIN, app_password=app_password,
                                   dialect="both", mail_dir=data_dir / SITE_MAIL_DIR)
    emulator_url, stop_emulator = serve_in_thread(emulator, host=host, port=emulator_port)

    api_key = "demo-" + secrets.token_urlsafe(32)
    hook_token = secrets.token_urlsafe(32)
    settings = demo_settings(data_dir, emulator_url, DEMO_API_LOGIN, app_password, port, host, api_key, hook_token)
    store_engine = store_db.create_store_engine(f"sqlite:///{(data_dir / STORE_FILE).resolve()}")
    store_db.upgrade(store_engine)
    store_engine.dispose()
    runtime = build_runtime(settings)
    _register_hook(site_engine, f"http://{host}:{port}/hooks/memberlux/{hook_token}")
    imported = _import_legacy_programs(runtime)
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
    if example:
        click.echo("  grant access as a CRM would (API key valid for this run only):")
        click.echo(f"    curl -s -X POST '{sidecar_url}/api/v1/grants?wait=15' -H 'X-API-Key: {api_key}' \\")
        click.echo(f"         -H 'Content-Type: application/json' -d '{example}'")
    if imported:
        click.echo(f"  programs:       {imported} imported from the legacy bundle plugin's data ({sidecar_url}/programs)")
    click.echo(f"  letters:        written to {(data_dir / MAIL_DIR).resolve()} as .eml files")
    click.echo(f"  site's mail:    written to {(data_dir / SITE_MAIL_DIR).resolve()} as .eml files")
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
