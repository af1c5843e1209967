"""`mlsidecar grants …`: follow and repair the grants of the bridge."""

from __future__ import annotations

import json

import click

from sidecar.cliutil import runtime_of, cli_actor, text_table, clip, utc, level_names


@click.group("grants")
def grants_group() -> None:
    """Grant bridge: list, inspect, retry and cancel grants, and their welcome e-mails (our store; WordPress
    only for level names)."""


def _term(grant) -> str:
    if grant.is_unlimited:
        return "unlimited"
    return f"{grant.duration} {grant.units}" if grant.duration is not None else ""


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
    runtime = runtime_of(ctx)
    try:
        with runtime.sessions() as session:
            page = queries.list_grants(session, status=status, channel=channel, search=search, before=before,
                                       limit=limit)
        levels = level_names(runtime)
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
    click.echo(text_table(
        ["ID", "CREATED (UTC)", "STATUS", "CHANNEL", "EMAIL", "LEVEL", "TERM", "ATTEMPTS", "LAST ERROR"],
        [[g.id, utc(g.created_at), g.status, g.channel, g.email, clip(levels.get(g.term_id, g.term_id and f"#{g.term_id}"), 30),
          _term(g), g.attempts, clip(g.last_error, 60)] for g in page.rows]))
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

    runtime = runtime_of(ctx)
    try:
        with runtime.sessions() as session:
            detail = queries.grant_detail(session, grant_id)
        if detail is None:
            raise click.ClickException(f"no grant with id '{grant_id}' (search by e-mail or external id with `grants list -q`)")
        levels = level_names(runtime)
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
        click.echo(text_table(
            ["#", "STARTED (UTC)", "KIND", "OUTCOME", "HTTP", "MS", "WORKER", "DETAIL"],
            [[a.number, utc(a.started_at), a.kind, a.outcome, a.http_status, a.elapsed_ms, a.worker, clip(a.detail, 80)]
             for a in detail.attempts]))
    click.echo(f"\naudit ({len(detail.events)}):")
    if detail.events:
        click.echo(text_table(
            ["TIME (UTC)", "ACTION", "ACTOR", "SOURCE IP", "DETAILS"],
            [[utc(e.occurred_at), e.action, e.actor, e.source_ip,
              clip(json.dumps(e.details or {}, ensure_ascii=False, default=str), 120)] for e in detail.events]))


def _grant_action(ctx: click.Context, grant_id: str, action: str) -> None:
    from sidecar.bridge.service import BridgeService, IntakeRejected

    runtime = runtime_of(ctx)
    try:
        service = BridgeService(runtime)
        before = service.get(grant_id)
        try:
            grant = service.retry(grant_id, cli_actor()) if action == "retry" else service.cancel(grant_id, cli_actor())
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

    runtime = runtime_of(ctx)
    try:
        if action is not None:
            try:
                if action == "resend":
                    row = resend_welcome(runtime, grant_id, actor=cli_actor())
                else:
                    row = mark_welcome_delivered(runtime, grant_id, actor=cli_actor())
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
        click.echo(f"{key.ljust(width)}  {'' if value is None else utc(value) if hasattr(value, 'hour') else value}")
    if row.state == "unknown":
        click.echo("outcome unknown: look for the Message-ID in the mail server's log, then use --mark-delivered "
                   "or --resend", err=True)


@click.group("shadow")
def shadow_group() -> None:
    """Bridge shadow mode (bridge.mode = "shadow"): how the legacy plugin's grants compare (our store only)."""


@shadow_group.command("report")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Only requests received on or after this day (YYYY-MM-DD, UTC).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def shadow_report_command(ctx: click.Context, since, fmt: str) -> None:
    """Counts per outcome and every mismatch, with the request and the key rows the watch saw."""
    from datetime import timezone

    from sidecar.bridge.shadow_report import mismatch_record, shadow_report

    start = since.replace(tzinfo=timezone.utc) if since else None
    runtime = runtime_of(ctx)
    try:
        with runtime.sessions() as session:
            report = shadow_report(session, start)
        levels = level_names(runtime)
    finally:
        runtime.close()
    if fmt == "json":
        click.echo(json.dumps({"since": start.isoformat() if start else None, "counts": report.counts,
                               "watching": report.watching, "mismatches": [mismatch_record(m) for m in report.mismatches],
                               "more_mismatches": report.more_mismatches}, indent=2, ensure_ascii=False, default=str))
        return
    click.echo(f"compared: {report.compared}    still watching: {report.watching}")
    click.echo(text_table(["OUTCOME", "GRANTS"], [[outcome, n] for outcome, n in report.counts.items()]))
    if not report.mismatches:
        click.echo("\nno mismatches")
        return
    click.echo(f"\nmismatches ({len(report.mismatches) + report.more_mismatches}):")
    rows = []
    for item in report.mismatches:
        g = item.grant
        keys = "; ".join(
            f"#{k['key_id']} level {k['term_id']} {'unlimited' if k.get('is_unlimited') else str(k['duration']) + ' ' + k['units']}"
            f" at {k['activated_at'][:19]}{' (deleted again)' if k.get('vanished') else ''}" for k in item.keys)
        rows.append([g.id, utc(g.created_at), g.channel, g.email, clip(levels.get(g.term_id, f"#{g.term_id}"), 30),
                     _term(g), item.outcome, clip(keys or item.reason, 100)])
    click.echo(text_table(["GRANT", "RECEIVED (UTC)", "CHANNEL", "EMAIL", "LEVEL", "REQUESTED", "OUTCOME", "LEGACY KEYS"],
                          rows))
    if report.more_mismatches:
        click.echo(f"{report.more_mismatches} more: narrow with --since", err=True)
