"""`mlsidecar remind`: what the reminders would send, and sending it; `remind approve` / `remind revoke`:
whether a level's reminders may go out at all (:mod:`sidecar.reminders.approval`)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import timedelta

import click

from sidecar.cliutil import cli_actor, clip, day_option, level_names, preview_only, runtime_of, text_table, utc


@click.group("remind", invoke_without_command=True)
@click.option("--dry-run", is_flag=True, help="Show what would be sent and why; record and send nothing.")
@day_option("Plan for this UTC day (default: today, UTC); another day needs --dry-run.")
@click.option("--level", "levels", type=int, multiple=True, help="Only these levels (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def remind(ctx: click.Context, dry_run: bool, day, levels: tuple[int, ...], fmt: str) -> None:
    """Plan and send the reminders due today (the worker does this daily), or preview them.

    A level's letters go out only once the level is approved (`remind approve`); until then a run
    lists them as awaiting approval and sends nothing of the level."""
    if ctx.invoked_subcommand is not None:
        if dry_run or day is not None or levels or fmt != "table":
            raise click.UsageError(f"--dry-run, --date, --level and --format of `remind` do not apply to "
                                   f"`remind {ctx.invoked_subcommand}`: give its options after it "
                                   f"(mlsidecar remind {ctx.invoked_subcommand} --level T)")
        return
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
            "unapproved": plan.unapproved,
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
    for term_id, count in plan.awaiting_letters().items():
        name = f" {names[term_id]}" if names.get(term_id) else ""
        click.echo(f"level {term_id}{name}: not approved, so nothing of it is sent; "
                   f"{count} letter(s) await approval (ACTION await). When this list is right: "
                   f"mlsidecar remind approve --level {term_id} --letters {count}", err=True)
    if plan.levels_off:
        click.echo(f"levels without reminders (monitoring off or no letters): {', '.join(map(str, plan.levels_off))}",
                   err=True)


@remind.command("approve")
@click.option("--level", "term_id", type=int, required=True, help="The level whose reminders may go out from now on.")
@click.option("--letters", type=click.IntRange(min=0), default=None, metavar="N",
              help="How many letters `mlsidecar remind --dry-run --level T` showed awaiting approval: the "
                   "approval is of that list, and is refused when the level's list is no longer that long.")
@click.pass_context
def approve(ctx: click.Context, term_id: int, letters: int | None) -> None:
    """Approve a level's reminders after reviewing its dry run; the next run sends them."""
    from sidecar.reminders.approval import ApprovalRefused, Review, check_approvable, letter_count, status
    from sidecar.reminders.approval import approve as approve_level
    from sidecar.reminders.run import run_reminders

    runtime = runtime_of(ctx)
    try:
        with runtime.sessions() as session:
            current = status(session, term_id)
        if current.approved:
            click.echo(f"level {term_id} is already approved (by {current.approved_by}, "
                       f"{utc(current.approved_at)} UTC); nothing changed")
            return
        check_approvable(runtime, term_id)
        made_at = runtime.clock.now()
        plan = run_reminders(runtime, levels=[term_id], dry_run=True).plan
        count = letter_count(i.step for i in plan.awaiting(term_id))
        dry_run = f"mlsidecar remind --dry-run --level {term_id}"
        if letters is None:
            raise click.UsageError(f"approving needs the number of letters you reviewed: look at `{dry_run}` "
                                   f"(it lists {count} letter(s) awaiting approval now), then give --letters {count}")
        if letters != count:
            raise click.ClickException(f"the dry run of level {term_id} now lists {count} letter(s) awaiting "
                                       f"approval, not {letters}: look at `{dry_run}` again")
        approve_level(runtime, term_id, actor=cli_actor(), source="cli",
                      review=Review(letters=count, made_at=made_at, stored=False))
    except ApprovalRefused as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        runtime.close()
    click.echo(f"level {term_id} approved with {count} letter(s) reviewed: its reminders go out from the next run "
               "(the worker's daily run, or `mlsidecar remind`)")


@remind.command("revoke")
@click.option("--level", "term_id", type=int, required=True, help="The level whose reminders must stop.")
@click.pass_context
def revoke(ctx: click.Context, term_id: int) -> None:
    """Withdraw a level's approval: nothing more of it is sent until it is approved again."""
    from sidecar.reminders.approval import revoke as revoke_level

    runtime = runtime_of(ctx)
    try:
        revoked, skipped = revoke_level(runtime, term_id, actor=cli_actor(), source="cli")
    finally:
        runtime.close()
    if not revoked:
        click.echo(f"level {term_id} was not approved; nothing changed")
        return
    click.echo(f"level {term_id}: approval revoked; nothing more of it is sent until it is approved again "
               f"({skipped} planned letter(s) skipped, reason not_approved)")
