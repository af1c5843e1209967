"""`mlsidecar programs …`: bundle programs on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sidecar.cliutil import runtime_of, login_name, text_table, clip


@click.group("programs")
def programs_group() -> None:
    """Bundle programs: definitions, enrolments, progress, imports."""


@programs_group.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def programs_list(ctx: click.Context, fmt: str) -> None:
    """Every program with its steps and how many learners are on each."""
    from sidecar.programs.catalog import ProgramCatalog
    from sidecar.programs.status import program_status

    runtime = runtime_of(ctx)
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
    click.echo(text_table(
        ["ID", "NAME", "STATUS", "COUNTING", "STEPS (level: learners)", "COMPLETED"],
        [[st.program.id, clip(st.program.definition.name, 40), st.program.status, st.program.definition.counting.value,
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

    runtime = runtime_of(ctx)
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
            "waiting": [{"certificate_id": c, "why": str(why)} for c, why in st.waiting]}, indent=2, ensure_ascii=False))
        return
    click.echo(f"program {st.program.id} {st.program.definition.name} ({st.program.status}, counts "
               f"{st.program.definition.counting.value} certificates)")
    click.echo(text_table(["STEP", "LEVEL", "LEARNERS", f"STALLED >{stalled_days}d"],
                           [[c.position, clip(f"{c.term_id} {c.level_name}", 40), c.learners, c.stalled]
                            for c in st.steps]))
    click.echo(f"completed {st.completed}, withdrawn {st.withdrawn}")
    if st.stalled:
        click.echo("\nstalled learners:")
        click.echo(text_table(["USER", "EMAIL", "NAME", "STEP", "SINCE", "DAYS"],
                               [[x.user_id, x.email, clip(x.name, 30), x.step, x.since, x.days_on_step]
                                for x in st.stalled]))
    for certificate_id, why in st.waiting:
        click.echo(f"waiting: certificate {certificate_id}: {why}")


@programs_group.command("enrol")
@click.argument("program_id", type=int)
@click.option("--user", "user_ref", required=True, help="User id, e-mail or login.")
@click.option("--grant-first/--no-grant-first", default=None,
              help="Grant step 1 now (default: the program's setting).")
@click.pass_context
def programs_enrol(ctx: click.Context, program_id: int, user_ref: str, grant_first: bool | None) -> None:
    """Enrol a learner (enrolling again changes nothing)."""
    from sidecar.bridge.service import IntakeRejected
    from sidecar.programs.progression import EnrolmentRefused, Progression

    runtime = runtime_of(ctx)
    try:
        try:
            result = Progression(runtime).enrol(program_id, user_ref.strip(), source="cli", actor=f"cli:{login_name()}",
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
    runtime = runtime_of(ctx)
    try:
        if legacy:
            _import_legacy(runtime, apply_changes, fmt)
        else:
            _import_toml(runtime, toml_path, apply_changes, fmt)
    finally:
        runtime.close()


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
            click.echo(text_table(["USER", "PROGRAM POST", "STEP", "COMPLETED", "ENROLLED ALREADY", "EVIDENCE"], rows))
    if not apply_changes:
        click.echo(f"dry run: {len(plan.programs)} program(s) ({plan.new_programs} new), "
                   f"{len(plan.enrolments)} enrolment(s) ({plan.new_enrolments} new); "
                   + ("blocking problems must be fixed first" if plan.blocking else
                      "add --apply to import" if plan.new_programs or plan.new_enrolments else
                      "nothing new to import"), err=True)
        if plan.blocking:
            raise SystemExit(1)
        return
    try:
        counts = apply_import(runtime, plan, actor=f"cli:{login_name()}")
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
            action = {"create": "create", "update": f"update program {item.existing_id} ({', '.join(item.changes)})",
                      "unchanged": f"unchanged: program {item.existing_id}"}[item.action]
            steps = " → ".join(f"{s.term_id} ({s.duration} {s.units})" for s in item.definition.steps)
            click.echo(f"{action}: '{item.definition.name}': {steps}")
            for warning in item.warnings:
                click.echo(f"  note  {warning}")
    if not apply_changes:
        actions = [item.action for item in planned]
        click.echo(f"dry run: {actions.count('create')} to create, {actions.count('update')} to update, "
                   f"{actions.count('unchanged')} unchanged; "
                   + ("add --apply to write" if set(actions) - {"unchanged"} else "nothing to write"), err=True)
        return
    try:
        counts = toml_import.apply(catalog, planned, actor=f"cli:{login_name()}")
    except toml_import.ProgramFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(counts) if fmt == "json" else
               f"created {counts['created']}, updated {counts['updated']}, unchanged {counts['unchanged']}")
