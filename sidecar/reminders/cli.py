"""`mlsidecar remind`: what the reminders would send, and sending it."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import timedelta

import click

from sidecar.cliutil import clip, day_option, level_names, preview_only, runtime_of, text_table


@click.command("remind")
@click.option("--dry-run", is_flag=True, help="Show what would be sent and why; record and send nothing.")
@day_option("Plan for this UTC day (default: today, UTC); another day needs --dry-run.")
@click.option("--level", "levels", type=int, multiple=True, help="Only these levels (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def remind(ctx: click.Context, dry_run: bool, day, levels: tuple[int, ...], fmt: str) -> None:
    """Plan and send the reminders due today (the worker does this daily), or preview them."""
    from sidecar.reminders.run import run_reminders
    from sidecar.store import leases
    from sidecar.jobs import REMINDERS_DAILY_JOB
    from sidecar.store.leases import holder_name

    preview_only(ctx, day, dry_run)
    runtime = runtime_of(ctx)
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
                report = run_reminders(runtime, day=day, levels=levels or None,
                                       dry_run=dry_run, progress=progress)
            except LookupError as exc:
                raise click.BadParameter(str(exc).strip("'\""), param_hint="--level") from None
        names = level_names(runtime)
    finally:
        if leased:
            leases.release(runtime.sessions, REMINDERS_DAILY_JOB, holder, runtime.clock.now(), "ok (cli)")
        runtime.close()
    plan = report.plan
    if fmt == "json":
        click.echo(json.dumps({
            "day": plan.day.isoformat(), "dry_run": plan.dry_run, "levels": plan.levels, "levels_off": plan.levels_off,
            "counts": plan.counts(), "planning_seconds": plan.seconds,
            "items": [{**asdict(item), "expired_on": item.expired_on.isoformat(), "due_on": item.due_on.isoformat()}
                      for item in plan.items],
            "send": None if report.send is None else report.send.__dict__,
            "awaiting_decision": report.awaiting_decision,
        }, indent=2, ensure_ascii=False))
        return
    if plan.items:
        click.echo(text_table(
            ["USER", "EMAIL", "NAME", "LEVEL", "EXPIRED ON", "STEP", "DUE", "ACTION", "REASON", "RECORDED"],
            [[i.user_id, i.email, clip(i.name, 24), clip(f"{i.term_id} {names.get(i.term_id, '')}".strip(), 30),
              i.expired_on, "digest" if i.step == 4 else i.step, i.due_on, i.action, i.reason,
              "yes" if i.recorded else "no"] for i in plan.items]))
    else:
        click.echo("nothing due")
    click.echo(report.summary(), err=True)
    if plan.levels_off:
        click.echo(f"levels without reminders (monitoring off or no letters): {', '.join(map(str, plan.levels_off))}",
                   err=True)
