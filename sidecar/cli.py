"""The `mlsidecar` command line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date, timedelta
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


def _runtime(ctx: click.Context, **kwargs):
    from sidecar.bootstrap import build_runtime

    clock = (ctx.find_object(dict) or {}).get("clock")  # embedding callers and tests may set the date
    if clock is not None:
        kwargs.setdefault("clock", clock)
    try:
        return build_runtime(_settings(ctx), **kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # shown to the operator as one readable line
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
def devstack_seed(db_url: str, users: int, levels: int, seed: int, prefix: str, today, fresh: bool) -> None:
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
    """Grant bridge: list, inspect, retry and cancel grants, and their welcome e-mails (our store; WordPress
    only for level names)."""


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
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _clip(text: str | None, limit: int) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utc(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _term(grant) -> str:
    if grant.is_unlimited:
        return "unlimited"
    return f"{grant.duration} {grant.units}" if grant.duration is not None else ""


def _level_names(runtime) -> dict[int, str]:
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


@grants_group.command("welcome")
@click.argument("grant_id")
@click.option("--resend", "action", flag_value="resend",
              help="Queue the welcome e-mail again (sent, failed or unknown); the worker sends it within a minute.")
@click.option("--mark-delivered", "action", flag_value="delivered",
              help="A letter whose outcome is unknown was found in the mail server's log: record it as sent.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def grants_welcome(ctx: click.Context, grant_id: str, action: str | None, fmt: str) -> None:
    """The grant's welcome e-mail: its state, or an administrator's decision about it."""
    from sidecar.bridge.welcome import WelcomeRefused, mark_welcome_delivered, resend_welcome, welcome_of
    from sidecar.store.grant_models import Grant

    runtime = _runtime(ctx)
    try:
        if action is not None:
            try:
                if action == "resend":
                    row = resend_welcome(runtime, grant_id, actor=_cli_actor())
                else:
                    row = mark_welcome_delivered(runtime, grant_id, actor=_cli_actor())
            except WelcomeRefused as exc:
                raise click.ClickException(exc.message) from None
        else:
            with runtime.sessions() as session:
                if session.get(Grant, grant_id) is None:
                    raise click.ClickException(f"no grant with id '{grant_id}'")
                row = welcome_of(session, grant_id)
    finally:
        runtime.close()
    record = None if row is None else {
        "grant_id": row.grant_id, "state": row.state, "reason": row.reason or None, "to": row.to_address,
        "attempts": row.attempts, "next_attempt_at": row.next_attempt_at, "handed_over_at": row.data_started_at,
        "sent_at": row.sent_at, "message_id": row.message_id, "last_error": row.last_error or None}
    if fmt == "json":
        click.echo(json.dumps({"welcome": record}, indent=2, ensure_ascii=False, default=str))
        return
    if record is None:
        click.echo(f"grant {grant_id}: no welcome e-mail queued")
        return
    width = max(len(key) for key in record)
    for key, value in record.items():
        click.echo(f"{key.ljust(width)}  {'' if value is None else _utc(value) if hasattr(value, 'hour') else value}")
    if row.state == "unknown":
        click.echo("outcome unknown: look for the Message-ID in the mail server's log, then use --mark-delivered "
                   "or --resend", err=True)



# --- learning monitor --------------------------------------------------------------------------------
def _explanation_record(e) -> dict:
    """An explanation as plain JSON-able data (dates as ISO strings)."""
    import dataclasses

    v = e.verdict
    return {
        "user": {"id": e.user.id, "login": e.user.login, "email": e.user.email, "first_name": e.user.first_name,
                 "last_name": e.user.last_name, "blocked": e.user.blocked},
        "level": {"id": e.term_id, "name": e.level_name},
        "day": e.day.isoformat(),
        "reason": e.reason,
        "is_sleeper": e.is_sleeper,
        "summary": e.summary,
        "expired_on": v.expired_on.isoformat() if v.expired_on else None,
        "last_access_day": v.last_access_day.isoformat() if v.last_access_day else None,
        "days_since_expiry": v.days_since_expiry(e.day),
        "last_grant": v.last_grant.isoformat() if v.last_grant else None,
        "blocked": v.blocked,
        "keys": [dataclasses.asdict(k) for k in e.keys],
        "ancestors": [{"id": term_id, "name": name} for term_id, name in e.ancestors],
        "ancestor_keys": [dataclasses.asdict(k) for k in e.ancestor_keys],
        "certificates_available": e.certificates_available,
        "certificates": [dataclasses.asdict(c) for c in e.certificates],
        "has_manual_certificate": e.has_manual_certificate,
        "read_model": dataclasses.asdict(e.read_model),
        "include_basket": e.include_basket,
        "check_ancestors": e.check_ancestors,
    }


def _key_table(keys) -> str:
    def flags(k) -> str:
        return ",".join(name for name, on in (("banned", k.banned), ("basket", k.basket), ("unlimited", k.unlimited)) if on)

    return _text_table(
        ["KEY", "LEVEL", "STATUS", "START", "END", "ACTIVATED", "TERM", "FLAGS", "COUNTS", "ACTIVE", "NOTE"],
        [[k.key_id, k.term_id, k.status, k.date_start, "unlimited" if k.unlimited else k.date_end, k.activated_on,
          f"{k.duration} {k.units}", flags(k), "yes" if k.counts else "no", "yes" if k.active_on_day else "no", k.note]
         for k in keys])


@cli.command("explain")
@click.option("--user", "user_ref", required=True, help="WordPress user id or e-mail address.")
@click.option("--level", "term_id", type=int, required=True, help="Access level (term_id).")
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="UTC day to evaluate (default: today, UTC).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def explain(ctx: click.Context, user_ref: str, term_id: int, day, fmt: str) -> None:
    """Is this learner a sleeper for this level, and why: the verdict and the rows behind it (live)."""
    from sidecar.monitor.service import MonitorService

    runtime = _runtime(ctx)
    try:
        try:
            e = MonitorService(runtime).explain(user_ref, term_id, day.date() if day else None)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
    finally:
        runtime.close()
    if fmt == "json":
        click.echo(json.dumps(_explanation_record(e), indent=2, ensure_ascii=False, default=str))
        return
    u, v = e.user, e.verdict
    name = " ".join(part for part in (u.first_name, u.last_name) if part)
    click.echo(f"user      {u.id} {u.login} <{u.email}>{' ' + name if name else ''}{' [blocked]' if u.blocked else ''}")
    click.echo(f"level     {e.term_id} {e.level_name}")
    click.echo(f"day       {e.day.isoformat()} (UTC)")
    click.echo(f"verdict   {e.reason}{' (SLEEPER)' if e.is_sleeper else ''}")
    click.echo(f"          {e.summary}")
    if v.expired_on:
        click.echo(f"expired   {v.expired_on.isoformat()} (last day with access {v.last_access_day.isoformat()})")
    click.echo(f"last grant {v.last_grant.isoformat() if v.last_grant else '-'}")
    rm = e.read_model
    listed = "yes" if rm.listed else "no"
    refreshed = f", report refreshed {_utc(rm.refreshed_at)} UTC for {rm.evaluated_for}" if rm.refreshed_at else ", report never refreshed"
    click.echo(f"in report {listed}{refreshed}")
    click.echo(f"\nkeys of the level ({len(e.keys)}):")
    if e.keys:
        click.echo(_key_table(e.keys))
    if e.ancestors:
        click.echo(f"\nparent levels: {', '.join(f'{t} {n}' for t, n in e.ancestors)}")
        click.echo(f"keys of parent levels ({len(e.ancestor_keys)}):")
        if e.ancestor_keys:
            click.echo(_key_table(e.ancestor_keys))
    if not e.certificates_available:
        click.echo("\ncertificates: module not installed (not considered)")
    else:
        click.echo(f"\ncertificates ({len(e.certificates)}):")
        if e.certificates:
            click.echo(_text_table(
                ["ID", "CLASS", "ISSUED", "CREATED", "DELETED", "WHY"],
                [[c.certificate_id, c.cls, c.date_issue, c.create_date, "yes" if c.deleted else "no", c.reason]
                 for c in e.certificates]))


@cli.group("sleepers")
def sleepers_group() -> None:
    """Learning monitor: rebuild and list the sleepers report (our store's read model)."""


@sleepers_group.command("refresh")
@click.option("--level", "term_id", type=int, default=None, help="Only this level (default: all levels).")
@click.pass_context
def sleepers_refresh(ctx: click.Context, term_id: int | None) -> None:
    """Re-evaluate levels against the WordPress tables and store the sleepers."""
    from sidecar.monitor.certificates import CertificateClassifier
    from sidecar.monitor.refresh import SleeperRefresher

    runtime = _runtime(ctx)
    try:
        names = _level_names(runtime)
        refresher = SleeperRefresher(runtime)
        if term_id is not None:
            if term_id not in names:
                raise click.BadParameter(f"there is no access level {term_id}", param_hint="--level")
            CertificateClassifier(runtime).sync()  # as refresh_all does: new certificates count at once
            reports = [refresher.refresh_level(term_id)]
        else:
            with click.progressbar(length=max(len(names), 1), label="refreshing levels", file=sys.stderr) as bar:
                last = [0]

                def progress(_term_id: int, done: int, _total: int) -> None:
                    bar.update(done - last[0])
                    last[0] = done

                reports = refresher.refresh_all(progress=progress)
    finally:
        runtime.close()
    click.echo(_text_table(
        ["LEVEL", "NAME", "SLEEPERS", "USERS", "ROWS", "SECONDS"],
        [[r.term_id, _clip(names.get(r.term_id, r.skipped or ""), 40), r.sleepers, r.users_considered, r.rows_scanned,
          f"{r.seconds:.2f}"] for r in reports]))
    click.echo(f"{len(reports)} level(s), {sum(r.sleepers for r in reports)} sleepers, "
               f"evaluated for {reports[0].evaluated_for if reports else '-'} (UTC)")


@sleepers_group.command("list")
@click.option("--level", "levels", type=int, multiple=True, help="Only these levels (repeatable).")
@click.option("--from", "expired_from", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Expired on or after this day.")
@click.option("--to", "expired_to", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Expired on or before this day.")
@click.option("--search", "-q", default="", help="Words of the name, e-mail or login.")
@click.option("--sort", type=click.Choice(["expired_on", "days_since", "name", "email", "level"]), default="expired_on",
              show_default=True)
@click.option("--desc", is_flag=True, help="Descending order.")
@click.option("--after", "cursor", default=None, help="Continue after a previous page (the cursor it printed).")
@click.option("--limit", type=click.IntRange(1, 1000), default=None,
              help="Rows to show (table/json: default 50, one page; csv: default all).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.pass_context
def sleepers_list(ctx: click.Context, levels: tuple[int, ...], expired_from, expired_to, search: str, sort: str,
                  desc: bool, cursor: str | None, limit: int | None, fmt: str) -> None:
    """List sleepers from the last refresh, oldest expiry first."""
    import itertools

    from sidecar.monitor.service import MonitorService, SleeperQuery
    from sidecar.monitor.views import api_record, csv_chunks

    if expired_from and expired_to and expired_from > expired_to:
        raise click.BadParameter("the window ends before it starts", param_hint="--to")
    runtime = _runtime(ctx)
    try:
        unknown = sorted(set(levels) - set(_level_names(runtime)))
        if unknown:
            raise click.BadParameter(f"no access level {', '.join(map(str, unknown))}", param_hint="--level")
        query = SleeperQuery(levels=tuple(dict.fromkeys(levels)),
                             expired_from=expired_from.date() if expired_from else None,
                             expired_to=expired_to.date() if expired_to else None, search=search.strip(),
                             sort=sort, descending=desc, after=cursor, limit=limit or 50)
        service = MonitorService(runtime)
        try:
            if fmt == "csv":
                rows = service.iterate(query)
                for chunk in csv_chunks(itertools.islice(rows, limit) if limit else rows):
                    click.echo(chunk, nl=False)
                return
            page = service.page(query)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--after") from None
    finally:
        runtime.close()
    if fmt == "json":
        click.echo(json.dumps({"total": page.total, "next_cursor": page.next_cursor,
                               "sleepers": [api_record(r) for r in page.rows]}, indent=2, ensure_ascii=False))
        return
    if not page.rows:
        click.echo("no sleepers match")
        return
    click.echo(_text_table(
        ["USER", "EMAIL", "FIRST NAME", "LAST NAME", "LEVEL", "EXPIRED ON", "DAYS", "LAST GRANT", "REMINDERS", "BLOCKED"],
        [[r.user_id, r.email, _clip(r.first_name, 20), _clip(r.last_name, 20), _clip(f"{r.term_id} {r.level_name}", 30),
          r.expired_on, r.days_since, r.last_grant or "", r.reminders_sent, "yes" if r.blocked else ""]
         for r in page.rows]))
    # On stderr so that piping the table elsewhere keeps only rows.
    click.echo(f"{len(page.rows)} of {page.total}", err=True)
    if page.next_cursor:
        click.echo(f"more: add --after {page.next_cursor}", err=True)

@cli.command("remind")
@click.option("--dry-run", is_flag=True, help="Show what would be sent and why; record and send nothing.")
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Plan for this UTC day (dry run only; default today, UTC).")
@click.option("--level", "levels", type=int, multiple=True, help="Only these levels (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def remind(ctx: click.Context, dry_run: bool, day, levels: tuple[int, ...], fmt: str) -> None:
    """Plan and send the reminders due today (the worker does this daily), or preview them."""
    from sidecar.reminders.run import run_reminders
    from sidecar.store import leases
    from sidecar.jobs import REMINDERS_DAILY_JOB
    from sidecar.store.leases import holder_name

    if day is not None and not dry_run:
        raise click.BadParameter("another day can only be previewed: add --dry-run", param_hint="--date")
    runtime = _runtime(ctx)
    holder = holder_name()
    leased = False
    try:
        if not dry_run:
            # The worker's daily run holds the same lease: two planners at once would only race for rows.
            leased = leases.try_acquire(runtime.sessions, REMINDERS_DAILY_JOB, holder, timedelta(hours=2),
                                        runtime.clock.now())
            if not leased:
                held = leases.get(runtime.sessions, REMINDERS_DAILY_JOB)
                raise click.ClickException(f"a reminders run is in progress elsewhere ({held.holder if held else '?'}); "
                                           "try again later")
        with click.progressbar(length=1, label="planning levels", file=sys.stderr) as bar:
            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)

            try:
                report = run_reminders(runtime, day=day.date() if day else None, levels=levels or None,
                                       dry_run=dry_run, progress=progress)
            except LookupError as exc:
                raise click.BadParameter(str(exc).strip("'\""), param_hint="--level") from None
        names = _level_names(runtime)
    finally:
        if leased:
            leases.release(runtime.sessions, REMINDERS_DAILY_JOB, holder, runtime.clock.now(), "ok (cli)")
        runtime.close()
    plan = report.plan
    if fmt == "json":
        click.echo(json.dumps({
            "day": plan.day.isoformat(), "dry_run": plan.dry_run, "levels": plan.levels, "levels_off": plan.levels_off,
            "counts": plan.counts(), "planning_seconds": plan.seconds,
            "items": [{**item.__dict__, "expired_on": item.expired_on.isoformat(), "due_on": item.due_on.isoformat()}
                      for item in plan.items],
            "send": None if report.send is None else report.send.__dict__,
            "awaiting_decision": report.awaiting_decision,
        }, indent=2, ensure_ascii=False))
        return
    if plan.items:
        click.echo(_text_table(
            ["USER", "EMAIL", "NAME", "LEVEL", "EXPIRED ON", "STEP", "DUE", "ACTION", "REASON", "RECORDED"],
            [[i.user_id, i.email, _clip(i.name, 24), _clip(f"{i.term_id} {names.get(i.term_id, '')}".strip(), 30),
              i.expired_on, "digest" if i.step == 4 else i.step, i.due_on, i.action, i.reason,
              "yes" if i.recorded else "no"] for i in plan.items]))
    else:
        click.echo("nothing due")
    click.echo(report.summary(), err=True)
    if plan.levels_off:
        click.echo(f"levels without reminders (monitoring off or no letters): {', '.join(map(str, plan.levels_off))}",
                   err=True)


@cli.group("programs")
def programs_group() -> None:
    """Bundle programs: definitions, enrolments, progress, imports."""


@programs_group.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def programs_list(ctx: click.Context, fmt: str) -> None:
    """Every program with its steps and how many learners are on each."""
    from sidecar.programs.catalog import ProgramCatalog
    from sidecar.programs.status import program_status

    runtime = _runtime(ctx)
    try:
        views = ProgramCatalog(runtime).all()
        statuses = [program_status(runtime, view.id) for view in views]
    finally:
        runtime.close()
    if fmt == "json":
        click.echo(json.dumps([{
            "id": st.program.id, "name": st.program.definition.name, "status": st.program.status,
            "counting": st.program.definition.counting.value,
            "steps": [{"step": c.position, "term_id": c.term_id, "level": c.level_name, "learners": c.learners}
                      for c in st.steps],
            "completed": st.completed, "withdrawn": st.withdrawn} for st in statuses], indent=2, ensure_ascii=False))
        return
    if not statuses:
        click.echo("no programs (create one in the UI, or `mlsidecar programs import --toml FILE | --legacy`)")
        return
    click.echo(_text_table(
        ["ID", "NAME", "STATUS", "COUNTING", "STEPS (level: learners)", "COMPLETED"],
        [[st.program.id, _clip(st.program.definition.name, 40), st.program.status, st.program.definition.counting.value,
          " → ".join(f"{c.term_id}:{c.learners}" for c in st.steps), st.completed] for st in statuses]))


@programs_group.command("status")
@click.argument("program_id", type=int)
@click.option("--stalled-days", type=click.IntRange(1, 3650), default=30, show_default=True,
              help="A learner on the same step for longer is listed as stalled.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def programs_status(ctx: click.Context, program_id: int, stalled_days: int, fmt: str) -> None:
    """Learners per step, stalled learners and certificates waiting for a grant."""
    from sidecar.programs.status import program_status

    runtime = _runtime(ctx)
    try:
        try:
            st = program_status(runtime, program_id, stalled_after_days=stalled_days)
        except LookupError as exc:
            raise click.BadParameter(str(exc).strip("'\""), param_hint="PROGRAM_ID") from None
    finally:
        runtime.close()
    if fmt == "json":
        click.echo(json.dumps({
            "id": st.program.id, "name": st.program.definition.name, "status": st.program.status,
            "steps": [c.__dict__ for c in st.steps], "completed": st.completed, "withdrawn": st.withdrawn,
            "stalled_after_days": stalled_days,
            "stalled": [{**learner.__dict__, "since": learner.since.isoformat()} for learner in st.stalled],
            "waiting": [{"certificate_id": c, "why": why} for c, why in st.waiting]}, indent=2, ensure_ascii=False))
        return
    click.echo(f"program {st.program.id} {st.program.definition.name} ({st.program.status}, counts "
               f"{st.program.definition.counting.value} certificates)")
    click.echo(_text_table(["STEP", "LEVEL", "LEARNERS", f"STALLED >{stalled_days}d"],
                           [[c.position, _clip(f"{c.term_id} {c.level_name}", 40), c.learners, c.stalled]
                            for c in st.steps]))
    click.echo(f"completed {st.completed}, withdrawn {st.withdrawn}")
    if st.stalled:
        click.echo("\nstalled learners:")
        click.echo(_text_table(["USER", "EMAIL", "NAME", "STEP", "SINCE", "DAYS"],
                               [[x.user_id, x.email, _clip(x.name, 30), x.step, x.since, x.days_on_step]
                                for x in st.stalled]))
    for certificate_id, why in st.waiting:
        click.echo(f"waiting: certificate {certificate_id}: {why}")


@programs_group.command("enrol")
@click.argument("program_id", type=int)
@click.option("--user", "user_ref", required=True, help="User id or e-mail.")
@click.option("--grant-first/--no-grant-first", default=None,
              help="Grant step 1 now (default: the program's setting).")
@click.pass_context
def programs_enrol(ctx: click.Context, program_id: int, user_ref: str, grant_first: bool | None) -> None:
    """Enrol a learner (enrolling again changes nothing)."""
    from sidecar.bridge.service import IntakeRejected
    from sidecar.programs.progression import EnrolmentRefused, Progression

    runtime = _runtime(ctx)
    try:
        try:
            result = Progression(runtime).enrol(program_id, user_ref.strip(), source="cli", actor=f"cli:{_operator()}",
                                                grant_first=grant_first)
        except LookupError as exc:
            raise click.BadParameter(str(exc).strip("'\""), param_hint="PROGRAM_ID / --user") from None
        except (EnrolmentRefused, IntakeRejected) as exc:
            raise click.ClickException(getattr(exc, "message", None) or str(exc)) from None
    finally:
        runtime.close()
    if not result.created:
        click.echo(f"already enrolled (enrolment {result.enrolment_id}); nothing changed")
        return
    click.echo(f"enrolled: enrolment {result.enrolment_id}"
               + (f"; step 1 granted through the outbox (grant {result.grant_id})" if result.grant_id else ""))


@programs_group.command("import")
@click.option("--legacy", "legacy", is_flag=True, help="From the old ml-bundle-courses plugin's data (read-only).")
@click.option("--toml", "toml_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="From a TOML file of programs.")
@click.option("--apply", "apply_changes", is_flag=True, help="Write it (without: a dry run that shows the plan).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def programs_import(ctx: click.Context, legacy: bool, toml_path: Path | None, apply_changes: bool, fmt: str) -> None:
    """Import programs; a dry run first, then --apply writes all of it or nothing."""
    if legacy == (toml_path is not None):
        raise click.UsageError("choose one source: --legacy or --toml FILE")
    runtime = _runtime(ctx)
    try:
        if legacy:
            _import_legacy(runtime, apply_changes, fmt)
        else:
            _import_toml(runtime, toml_path, apply_changes, fmt)
    finally:
        runtime.close()


def _operator() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def _import_legacy(runtime, apply_changes: bool, fmt: str) -> None:
    from sidecar.programs.legacy import LegacyDataError, apply_import, describe, plan_import

    plan = plan_import(runtime)
    shown = describe(plan)
    if fmt == "json" and not apply_changes:
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
    elif fmt == "table":
        for p in shown["programs"]:
            state = f"already imported as {p['already_imported_as']}" if p["already_imported_as"] else "new"
            steps = " → ".join(f"{s['term_id']} ({s['duration']} {s['units']})" for s in p["steps"] or [])
            click.echo(f"program post {p['post_id']} '{p['title']}' [{p['post_status']}] {state}: {steps}")
            for line in p["problems"]:
                click.echo(f"  ERROR {line}")
            for line in p["notes"]:
                click.echo(f"  note  {line}")
        rows = [[e["user_id"], e["post_id"], e["step"], "yes" if e["completed"] else "", "yes" if e["already_enrolled"] else "",
                 "; ".join(e["problems"] + e["evidence"])] for e in shown["enrolments"]]
        if rows:
            click.echo(_text_table(["USER", "PROGRAM POST", "STEP", "COMPLETED", "ENROLLED ALREADY", "EVIDENCE"], rows))
    if not apply_changes:
        click.echo(f"dry run: {len(shown['programs'])} program(s), {len(shown['enrolments'])} enrolment(s); "
                   + ("blocking problems must be fixed first" if plan.blocking else "add --apply to import"), err=True)
        if plan.blocking:
            raise SystemExit(1)
        return
    try:
        counts = apply_import(runtime, plan, actor=f"cli:{_operator()}")
    except LegacyDataError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(counts) if fmt == "json" else
               f"imported {counts['programs']} program(s) and {counts['enrolments']} enrolment(s) "
               f"(skipped {counts['skipped_programs']} and {counts['skipped_enrolments']} already imported)")


def _import_toml(runtime, path: Path, apply_changes: bool, fmt: str) -> None:
    from sidecar.programs import toml_import
    from sidecar.programs.catalog import ProgramCatalog

    catalog = ProgramCatalog(runtime)
    try:
        planned = toml_import.plan(catalog, toml_import.read_file(path))
    except toml_import.ProgramFileError as exc:
        raise click.ClickException("the file cannot be imported; nothing was written:\n" + str(exc)) from None
    if fmt == "table" or not apply_changes:
        for item in planned:
            action = "create" if item.existing_id is None else f"update program {item.existing_id}"
            steps = " → ".join(f"{s.term_id} ({s.duration} {s.units})" for s in item.definition.steps)
            click.echo(f"{action}: '{item.definition.name}': {steps}")
            for warning in item.warnings:
                click.echo(f"  note  {warning}")
    if not apply_changes:
        click.echo("dry run: add --apply to write", err=True)
        return
    try:
        counts = toml_import.apply(catalog, planned, actor=f"cli:{_operator()}")
    except toml_import.ProgramFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(counts) if fmt == "json" else f"created {counts['created']}, updated {counts['updated']}")


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
