"""The `mlsidecar` command line: the commands of the whole service (configuration, store, doctor, the
processes, the demo); each capability brings its own group of commands (``sidecar/<capability>/cli.py``)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from sidecar.bridge.cli import grants_group, shadow_group
from sidecar.cliutil import EXIT_CONFIG, StartupError, runtime_of, settings_of
from sidecar.config import ConfigError, describe_settings
from sidecar.devstack.cli import devstack
from sidecar.monitor.cli import explain, legacy_group, sleepers_group
from sidecar.programs.cli import programs_group
from sidecar.reminders.cli import remind

log = logging.getLogger("sidecar")

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="MLS_CONFIG",
              help="TOML configuration file (default: ./mlsidecar.toml, then /etc/mlsidecar/mlsidecar.toml).")
@click.option("-v", "--verbose", count=True,
              help="Log more on stderr: -v information and what start-up found about the site (missing optional "
                   "modules, which `doctor` reports anyway), -vv debug. Without it, commands other than serve and "
                   "worker log only the errors and warnings of their own work.")
@click.version_option(package_name="mlsidecar")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Companion service for a WordPress site running MemberLux."""
    obj = ctx.ensure_object(dict)
    obj["config_path"] = config_path
    obj["verbose"] = verbose


# --- config -------------------------------------------------------------------------------------
@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def config_check(ctx: click.Context, fmt: str) -> None:
    """Parse and validate the configuration; print it with secrets hidden."""
    settings = settings_of(ctx)
    view = describe_settings(settings)
    if fmt == "json":
        click.echo(json.dumps(view, indent=2, ensure_ascii=False))
        return
    click.echo("configuration is valid")
    for section, values in view.items():
        click.echo(f"[{section}]")
        for key, value in values.items():
            click.echo(f"  {key} = {json.dumps(value, ensure_ascii=False)}")


@config_group.command("reference")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
def config_reference(fmt: str) -> None:
    """Print the reference of every setting (from the schema; no configuration file needed).

    docs/configuration.md is this command's markdown output.
    """
    from sidecar.configref import render

    click.echo(render(fmt), nl=False)


# --- store ---------------------------------------------------------------------------------------
@cli.group("db")
def db_group() -> None:
    """Our store's schema (never the WordPress database)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Create or migrate the store's tables."""
    from sidecar.bootstrap import store_url
    from sidecar.store import db as store_db

    settings = settings_of(ctx)
    engine = store_db.create_store_engine(store_url(settings))
    try:
        store_db.guard_separate(settings.store.url, settings.wordpress.db_url, engine, settings.wordpress.table_prefix)
        before = store_db.current_revision(engine)
        store_db.upgrade(engine, revision)
        click.echo(f"store: {before or 'empty'} -> {store_db.current_revision(engine)}")
    except store_db.StoreError as exc:
        raise StartupError(str(exc)) from exc
    finally:
        engine.dispose()


@db_group.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Show the store's schema revision and the one the code expects."""
    from sidecar.bootstrap import store_url
    from sidecar.store import db as store_db

    engine = store_db.create_store_engine(store_url(settings_of(ctx)))
    try:
        current, head = store_db.current_revision(engine), store_db.head_revision()
        click.echo(f"current: {current or 'none'}\nexpected: {head}")
        if current != head:
            sys.exit(1)
    finally:
        engine.dispose()


# --- doctor ----------------------------------------------------------------------------------------
@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def doctor(ctx: click.Context, fmt: str) -> None:
    """Check every dependency; exit 1 if any check fails."""
    from sidecar.doctor import FAIL, Doctor, render_table

    checker = Doctor(settings_of(ctx))
    try:
        checks = list(checker.run())
    finally:
        checker.close()
    if fmt == "json":
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2, ensure_ascii=False))
    else:
        click.echo(render_table(checks))
    if any(c.status == FAIL for c in checks):
        sys.exit(1)


# --- processes ------------------------------------------------------------------------------------
@cli.command()
@click.option("--host", default=None, help="Override web.host.")
@click.option("--port", type=int, default=None, help="Override web.port.")
@click.option("--workers", type=int, default=None, help="Override web.workers.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the web app under gunicorn (bridge intake, UI, APIs). Jobs run in `mlsidecar worker`."""
    from sidecar.serving import run_gunicorn

    settings = settings_of(ctx)
    if settings.web.secret_key is None:
        # Each gunicorn worker would invent its own key: sessions would break at random.
        raise StartupError("web.secret_key is required for `serve` (e.g. secret_key = \"env:MLS_WEB_SECRET_KEY\")")
    runtime_of(ctx).close()  # fail fast, with a readable message, before forking workers
    run_gunicorn(settings, host or settings.web.host, port or settings.web.port, workers or settings.web.workers)


@cli.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the scheduler and background jobs (run exactly one per site; extras wait on leases)."""
    from sidecar.worker import build_outbox, build_scheduler

    runtime = runtime_of(ctx)
    scheduler = build_scheduler(runtime, background=False)
    outbox = build_outbox(runtime)
    outbox.start()
    click.echo("worker started; Ctrl-C to stop", err=True)
    import signal

    # systemd and docker stop with SIGTERM: end as cleanly as Ctrl-C (jobs release their leases).
    signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=True))
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        outbox.stop()
        runtime.close()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True, help="Sidecar web port (0 = any free port).")
@click.option("--emulator-port", type=int, default=8081, show_default=True, help="Emulated site port (0 = any free port).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".demo"), show_default=True)
@click.option("--users", type=click.IntRange(10, 500_000), default=2000, show_default=True)
@click.option("--levels", type=click.IntRange(2, 100), default=8, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--fresh", is_flag=True, help="Rebuild the demo site and store from scratch.")
@click.option("--shadow", is_flag=True, help="Rehearse the switch from the legacy plugin: the emulated site also runs "
                                             "a stand-in of ml-grant-bridge and mirrors its requests to the bridge, "
                                             "which runs in shadow mode (docs/migrating-from-legacy.md).")
@click.option("--exit-after", type=float, default=None, hidden=True, help="Stop after N seconds (for tests).")
def demo(host: str, port: int, emulator_port: int, data_dir: Path, users: int, levels: int, seed: int,
         fresh: bool, shadow: bool, exit_after: float | None) -> None:
    """Zero-setup demo: an emulated MemberLux site with realistic data + the sidecar, in one process."""
    from sidecar.demo import run_demo

    run_demo(host=host, port=port, emulator_port=emulator_port, data_dir=data_dir, users=users, levels=levels,
             seed=seed, fresh=fresh, exit_after=exit_after, shadow=shadow)

# --- the capabilities' own commands ------------------------------------------------------------------
for command in (grants_group, shadow_group, explain, sleepers_group, legacy_group, remind, programs_group, devstack):
    cli.add_command(command)


def main() -> None:
    try:
        cli.main(standalone_mode=False, prog_name="mlsidecar")
    except ConfigError as exc:
        click.echo(f"mlsidecar: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()

