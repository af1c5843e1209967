"""The `mlsidecar` command line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date
from pathlib import Path

import click

from sidecar.config import ConfigError, Settings, describe_settings, load_settings

log = logging.getLogger("sidecar")

EXIT_CONFIG = 2
EXIT_STARTUP = 3


class StartupError(click.ClickException):
    exit_code = EXIT_STARTUP


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("config_path"))
        from sidecar.logs import configure_logging

        configure_logging(obj["settings"].log.format, obj["settings"].log.level)
    return obj["settings"]


def _runtime(ctx: click.Context, **kwargs):  # noqa: ANN202
    from sidecar.bootstrap import build_runtime

    try:
        return build_runtime(_settings(ctx), **kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - shown to the operator as one readable line
        raise StartupError(_explain(exc)) from exc


def _explain(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 2000 else text[:2000] + "…"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="MLS_CONFIG",
              help="TOML configuration file (default: ./mlsidecar.toml, then /etc/mlsidecar/mlsidecar.toml).")
@click.version_option(package_name="mlsidecar")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Companion service for a WordPress site running MemberLux."""
    ctx.ensure_object(dict)["config_path"] = config_path


# --- config -------------------------------------------------------------------------------------
@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def config_check(ctx: click.Context, fmt: str) -> None:
    """Parse and validate the configuration; print it with secrets hidden."""
    settings = _settings(ctx)
    view = describe_settings(settings)
    if fmt == "json":
        click.echo(json.dumps(view, indent=2, ensure_ascii=False))
        return
    click.echo("configuration is valid")
    for section, values in view.items():
        click.echo(f"[{section}]")
        for key, value in values.items():
            click.echo(f"  {key} = {json.dumps(value, ensure_ascii=False)}")


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

    settings = _settings(ctx)
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

    engine = store_db.create_store_engine(store_url(_settings(ctx)))
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

    checker = Doctor(_settings(ctx))
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

    settings = _settings(ctx)
    if settings.web.secret_key is None:
        # Each gunicorn worker would invent its own key: sessions would break at random.
        raise StartupError("web.secret_key is required for `serve` (e.g. secret_key = \"env:MLS_WEB_SECRET_KEY\")")
    _runtime(ctx).close()  # fail fast, with a readable message, before forking workers
    run_gunicorn(settings, host or settings.web.host, port or settings.web.port, workers or settings.web.workers)


@cli.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the scheduler and background jobs (run exactly one per site; extras wait on leases)."""
    from sidecar.worker import build_outbox, build_scheduler

    runtime = _runtime(ctx)
    scheduler = build_scheduler(runtime, background=False)
    outbox = build_outbox(runtime)
    outbox.start()
    click.echo("worker started; Ctrl-C to stop", err=True)
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
@click.option("--exit-after", type=float, default=None, hidden=True, help="Stop after N seconds (for tests).")
def demo(host: str, port: int, emulator_port: int, data_dir: Path, users: int, levels: int, seed: int,
         fresh: bool, exit_after: float | None) -> None:
    """Zero-setup demo: an emulated MemberLux site with realistic data + the sidecar, in one process."""
    from sidecar.demo import run_demo

    run_demo(host=host, port=port, emulator_port=emulator_port, data_dir=data_dir, users=users, levels=levels,
             seed=seed, fresh=fresh, exit_after=exit_after)


# --- devstack ----------------------------------------------------------------------------------------
@cli.group()
def devstack() -> None:
    """The MemberLux emulator and its data generator (development and tests only)."""


@devstack.command("seed")
@click.option("--db-url", required=True, help="Empty database for the emulated site (SQLite file or MariaDB).")
@click.option("--users", type=click.IntRange(1, 5_000_000), default=2000, show_default=True)
@click.option("--levels", type=click.IntRange(1, 500), default=8, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--prefix", default="wp_", show_default=True)
@click.option("--today", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="UTC day the data is built around.")
@click.option("--fresh", is_flag=True, help="Drop the site's tables first.")
def devstack_seed(db_url: str, users: int, levels: int, seed: int, prefix: str, today, fresh: bool) -> None:  # noqa: ANN001
    """Build a realistic MemberLux site (deterministic for a given seed and day)."""
    from sidecar.devstack.site import build_demo_site

    day = today.date() if today else date.today()
    with click.progressbar(length=100, label="seeding", file=sys.stderr) as bar:
        last = [0]

        def progress(fraction: float) -> None:
            step = int(fraction * 100)
            bar.update(step - last[0])
            last[0] = step

        summary = build_demo_site(db_url, users=users, levels=levels, seed=seed, today=day, prefix=prefix,
                                  fresh=fresh, progress=progress)
    import dataclasses

    click.echo(json.dumps(dataclasses.asdict(summary), indent=2, ensure_ascii=False, default=str))


@devstack.command("serve")
@click.option("--db-url", required=True)
@click.option("--prefix", default="wp_", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8081, show_default=True)
@click.option("--app-user", default="sidecar", show_default=True)
@click.option("--app-password", envvar="MLS_DEVSTACK_APP_PASSWORD", required=True,
              help="Application Password the emulator accepts (env MLS_DEVSTACK_APP_PASSWORD).")
@click.option("--dialect", type=click.Choice(["woocommerce", "term_id", "both"]), default="both", show_default=True)
@click.option("--latency", type=float, default=0.0, help="Seconds added to every order call.")
@click.option("--failure-rate", type=click.FloatRange(0, 1), default=0.0)
def devstack_serve(db_url: str, prefix: str, host: str, port: int, app_user: str, app_password: str, dialect: str,
                   latency: float, failure_rate: float) -> None:
    """Serve the emulated site's REST API on its own."""
    import sqlalchemy as sa
    from werkzeug.serving import run_simple

    from sidecar.devstack.emulator import create_emulator_app

    engine = sa.create_engine(db_url)
    app = create_emulator_app(engine, prefix=prefix, app_user=app_user, app_password=app_password, dialect=dialect,
                              latency_seconds=latency, failure_rate=failure_rate)
    run_simple(host, port, app, threaded=True)


# --- grants ------------------------------------------------------------------------------------------
@cli.group("grants")
def grants_group() -> None:
    """Grant bridge: list, inspect, retry and cancel grants (our store; WordPress only for level names)."""


def _cli_actor() -> str:
    import getpass

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - containers may run under a uid without a passwd entry
        user = "unknown"
    return f"cli:{user}"


def _text_table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[("" if value is None else str(value)) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _clip(text: str | None, limit: int) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utc(moment) -> str:  # noqa: ANN001
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _term(grant) -> str:  # noqa: ANN001
    if grant.is_unlimited:
        return "unlimited"
    return f"{grant.duration} {grant.units}" if grant.duration is not None else ""


def _level_names(runtime) -> dict[int, str]:  # noqa: ANN001
    return {level.term_id: level.name for level in runtime.reader.levels()}


@grants_group.command("list")
@click.option("--status", default=None, help="Only grants in this state (queued, fetching, delivering, confirming, "
                                               "succeeded, failed, cancelled).")
@click.option("--channel", default=None, help="Only grants that came through this channel (legacy, api, amocrm, program).")
@click.option("--search", "-q", default=None, help="Part of the e-mail, or exactly an external id, grant id or amoCRM lead id.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--before", "cursor", default=None, help="Continue after a previous page (the cursor it printed).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def grants_list(ctx: click.Context, status: str | None, channel: str | None, search: str | None, limit: int,
                cursor: str | None, fmt: str) -> None:
    """List grants, newest first."""
    from sidecar.bridge import queries
    from sidecar.store.grant_models import ALL_STATES

    if status is not None and status not in ALL_STATES:
        raise click.BadParameter(f"'{status}' is not one of {', '.join(ALL_STATES)}", param_hint="--status")
    try:
        before = queries.Cursor.decode(cursor) if cursor else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--before") from None
    runtime = _runtime(ctx)
    try:
        with runtime.sessions() as session:
            page = queries.list_grants(session, status=status, channel=channel, search=search, before=before,
                                       limit=limit)
        levels = _level_names(runtime)
    finally:
        runtime.close()
    next_cursor = page.next_cursor.encode() if page.next_cursor else None
    if fmt == "json":
        grants = [{**queries.grant_record(g), "level_name": levels.get(g.term_id)} for g in page.rows]
        click.echo(json.dumps({"grants": grants, "next_cursor": next_cursor}, indent=2, ensure_ascii=False))
        return
    if not page.rows:
        click.echo("no grants match")
        return
    click.echo(_text_table(
        ["ID", "CREATED (UTC)", "STATUS", "CHANNEL", "EMAIL", "LEVEL", "TERM", "ATTEMPTS", "LAST ERROR"],
        [[g.id, _utc(g.created_at), g.status, g.channel, g.email, _clip(levels.get(g.term_id, g.term_id and f"#{g.term_id}"), 30),
          _term(g), g.attempts, _clip(g.last_error, 60)] for g in page.rows]))
    if next_cursor:
        # On stderr so that piping the table elsewhere keeps only rows.
        click.echo(f"more: add --before {next_cursor}", err=True)


@grants_group.command("show")
@click.argument("grant_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def grants_show(ctx: click.Context, grant_id: str, fmt: str) -> None:
    """Every field of one grant, its delivery attempts and its audit trail."""
    from sidecar.bridge import queries

    runtime = _runtime(ctx)
    try:
        with runtime.sessions() as session:
            detail = queries.grant_detail(session, grant_id)
        if detail is None:
            raise click.ClickException(f"no grant with id '{grant_id}' (search by e-mail or external id with `grants list -q`)")
        levels = _level_names(runtime)
    finally:
        runtime.close()
    record = {**queries.grant_record(detail.grant), "level_name": levels.get(detail.grant.term_id)}
    if fmt == "json":
        click.echo(json.dumps({"grant": record, "attempts": [queries.attempt_record(a) for a in detail.attempts],
                               "audit": [queries.event_record(e) for e in detail.events]},
                              indent=2, ensure_ascii=False, default=str))
        return
    width = max(len(key) for key in record)
    for key, value in record.items():
        shown = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (dict, list)) else value
        click.echo(f"{key.ljust(width)}  {'' if shown is None else shown}")
    click.echo(f"\nattempts ({len(detail.attempts)}):")
    if detail.attempts:
        click.echo(_text_table(
            ["#", "STARTED (UTC)", "KIND", "OUTCOME", "HTTP", "MS", "WORKER", "DETAIL"],
            [[a.number, _utc(a.started_at), a.kind, a.outcome, a.http_status, a.elapsed_ms, a.worker, _clip(a.detail, 80)]
             for a in detail.attempts]))
    click.echo(f"\naudit ({len(detail.events)}):")
    if detail.events:
        click.echo(_text_table(
            ["TIME (UTC)", "ACTION", "ACTOR", "SOURCE IP", "DETAILS"],
            [[_utc(e.occurred_at), e.action, e.actor, e.source_ip,
              _clip(json.dumps(e.details or {}, ensure_ascii=False, default=str), 120)] for e in detail.events]))


def _grant_action(ctx: click.Context, grant_id: str, action: str) -> None:
    from sidecar.bridge.service import BridgeService, IntakeRejected

    runtime = _runtime(ctx)
    try:
        service = BridgeService(runtime)
        before = service.get(grant_id)
        try:
            grant = service.retry(grant_id, _cli_actor()) if action == "retry" else service.cancel(grant_id, _cli_actor())
        except IntakeRejected as exc:
            raise click.ClickException(exc.message) from None
    finally:
        runtime.close()
    click.echo(f"grant {grant.id}: {before.status if before else '?'} -> {grant.status}")


@grants_group.command("retry")
@click.argument("grant_id")
@click.pass_context
def grants_retry(ctx: click.Context, grant_id: str) -> None:
    """Put a failed or cancelled grant back in the queue (the worker delivers it)."""
    _grant_action(ctx, grant_id, "retry")


@grants_group.command("cancel")
@click.argument("grant_id")
@click.pass_context
def grants_cancel(ctx: click.Context, grant_id: str) -> None:
    """Cancel a queued, CRM-reading or failed grant (never one being delivered)."""
    _grant_action(ctx, grant_id, "cancel")


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
