"""`mlsidecar explain` and `mlsidecar sleepers …`: the learning monitor on the command line."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import click

from sidecar.cliutil import UtcDay, clip, day_option, level_names, preview_only, runtime_of, text_table, utc
from sidecar.domain.sleepers import Reason


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
        "access_until": e.access_until.isoformat() if e.access_until else None,
        "access_resumes": e.access_resumes.isoformat() if e.access_resumes else None,
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


_OPT_OUT_TEXT = {"unsubscribed": "unsubscribed from the reminders",
                 "memberlux_unsubscribed": "unsubscribed from MemberLux's letters"}


def _mail_opt_outs(runtime, user_id: int) -> tuple[str, ...]:
    """The stop reasons of the reminders that hold for this learner whatever the level (reminders.md)."""
    from sidecar.store.reminder_models import Unsubscribe

    with runtime.sessions() as session:
        ours = session.get(Unsubscribe, user_id) is not None
    theirs = bool(runtime.reader.mailing_unsubscribed_ids([user_id]))
    return tuple(reason for reason, holds in (("unsubscribed", ours), ("memberlux_unsubscribed", theirs)) if holds)


def _key_table(keys) -> str:
    def flags(k) -> str:
        return ",".join(name for name, on in (("banned", k.banned), ("basket", k.basket), ("unlimited", k.unlimited)) if on)

    return text_table(
        ["KEY", "LEVEL", "STATUS", "START", "END", "ACTIVATED", "TERM", "FLAGS", "COUNTS", "ACTIVE", "NOTE"],
        [[k.key_id, k.term_id, k.status, k.date_start, "unlimited" if k.unlimited else k.date_end, k.activated_on,
          f"{k.duration} {k.units}", flags(k), "yes" if k.counts else "no", "yes" if k.active_on_day else "no", k.note]
         for k in keys])


def _last_day(end) -> str:
    return (end - timedelta(days=1)).isoformat()


def _access_lines(e) -> list[str]:
    """The learner's access on the day evaluated, in words that hold for the verdict and the day."""
    v, day = e.verdict, e.day
    x = v.expired_on
    if v.reason is Reason.UNLIMITED:
        return ["access    unlimited (a key without an end)"]
    if x is None:
        return []
    if x <= day:
        return [f"expired   {x.isoformat()} (last day with access {_last_day(x)})"]
    if e.access_until is not None:  # access on the day
        lines = [f"access    active until {e.access_until.isoformat()} (last day with access {_last_day(e.access_until)})"]
        if e.access_resumes is not None:
            lines.append(f"          paid ahead: again from {e.access_resumes.isoformat()} until {x.isoformat()} "
                         f"(last day with access {_last_day(x)})")
        return lines
    if e.access_resumes is not None:
        return [f"access    none on {day.isoformat()}; paid ahead: again from {e.access_resumes.isoformat()} "
                f"until {x.isoformat()} (last day with access {_last_day(x)})"]
    return [f"access    none on {day.isoformat()}; a key of the level ends after it, on {x.isoformat()}"]


@click.command("explain")
@click.option("--user", "user_ref", required=True, help="WordPress user id or e-mail address.")
@click.option("--level", "term_id", type=int, required=True, help="Access level (term_id).")
@day_option("UTC day to evaluate (default: today, UTC).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def explain(ctx: click.Context, user_ref: str, term_id: int, day, fmt: str) -> None:
    """Is this learner a sleeper for this level, and why: the verdict and the rows behind it (live)."""
    from sidecar.monitor.service import MonitorService

    runtime = runtime_of(ctx)
    try:
        try:
            e = MonitorService(runtime).explain(user_ref, term_id, day)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
        opt_outs = _mail_opt_outs(runtime, e.user.id)
    finally:
        runtime.close()
    if fmt == "json":
        click.echo(json.dumps({**_explanation_record(e), "reminders_stopped_by": list(opt_outs)}, indent=2,
                              ensure_ascii=False, default=str))
        return
    u, v = e.user, e.verdict
    name = " ".join(part for part in (u.first_name, u.last_name) if part)
    click.echo(f"user      {u.id} {u.login} <{u.email}>{' ' + name if name else ''}{' [blocked]' if u.blocked else ''}")
    click.echo(f"level     {e.term_id} {e.level_name}")
    click.echo(f"day       {e.day.isoformat()} (UTC)")
    click.echo(f"verdict   {e.reason}{' (SLEEPER)' if e.is_sleeper else ''}")
    click.echo(f"          {e.summary}")
    for line in _access_lines(e):
        click.echo(line)
    click.echo(f"last grant {v.last_grant.isoformat() if v.last_grant else '-'}")
    rm = e.read_model
    listed = "yes" if rm.listed else "no"
    refreshed = f", report refreshed {utc(rm.refreshed_at)} UTC for {rm.evaluated_for}" if rm.refreshed_at else ", report never refreshed"
    click.echo(f"in report {listed}{refreshed}")
    stopped = "; ".join(_OPT_OUT_TEXT[reason] for reason in opt_outs)
    click.echo(f"reminders {'none: ' + stopped if stopped else 'may be sent (no unsubscribe on record)'}")
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
            click.echo(text_table(
                ["ID", "CLASS", "ISSUED", "CREATED", "DELETED", "WHY"],
                [[c.certificate_id, c.cls, c.date_issue, c.create_date, "yes" if c.deleted else "no", c.reason]
                 for c in e.certificates]))


@click.group("sleepers")
def sleepers_group() -> None:
    """Learning monitor: rebuild and list the sleepers report (our store's read model)."""


@sleepers_group.command("refresh")
@click.option("--level", "term_id", type=int, default=None, help="Only this level (default: all levels).")
@day_option("Evaluate for this UTC day (default: today, UTC); another day needs --dry-run.")
@click.option("--dry-run", is_flag=True,
              help="Evaluate and show the figures, but store nothing: the report keeps its rows.")
@click.pass_context
def sleepers_refresh(ctx: click.Context, term_id: int | None, day, dry_run: bool) -> None:
    """Re-evaluate levels against the WordPress tables and store the sleepers.

    The stored report is always today's (UTC): the worker rebuilds any level evaluated for another day.
    Another day is therefore only previewed (--date D --dry-run); `sleepers list --date D` lists its
    learners.
    """
    from sidecar.monitor.certificates import CertificateClassifier
    from sidecar.monitor.increments import RefreshBusy
    from sidecar.monitor.refresh import SleeperRefresher

    preview_only(ctx, day, dry_run)
    runtime = runtime_of(ctx)
    try:
        names = level_names(runtime)
        day = day or runtime.clock.today_utc()
        refresher = SleeperRefresher(runtime)
        if term_id is not None and term_id not in names:
            raise click.BadParameter(f"there is no access level {term_id}", param_hint="--level")
        if term_id is not None and not dry_run:
            CertificateClassifier(runtime).sync()  # as refresh_all does: new certificates count at once
            reports = [refresher.refresh_level(term_id, day)]
        else:
            label = f"evaluating levels for {day.isoformat()}" if dry_run else "refreshing levels"
            length = 1 if term_id is not None else max(len(names), 1)
            with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
                last = [0]

                def progress(_term_id: int, done: int, _total: int) -> None:
                    bar.update(done - last[0])
                    last[0] = done

                if dry_run:
                    reports = refresher.preview(day, None if term_id is None else [term_id], progress=progress)
                else:
                    reports = refresher.refresh_all(progress=progress, day=day)
    except RefreshBusy as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        runtime.close()
    click.echo(text_table(
        ["LEVEL", "NAME", "SLEEPERS", "USERS", "ROWS", "SECONDS"],
        [[r.term_id, clip(names.get(r.term_id, r.skipped or ""), 40), r.sleepers, r.users_considered, r.rows_scanned,
          f"{r.seconds:.2f}"] for r in reports]))
    click.echo(f"{len(reports)} level(s), {sum(r.sleepers for r in reports)} sleepers, "
               f"evaluated for {day.isoformat()} (UTC)"
               + ("; dry run: nothing stored, the report is unchanged" if dry_run else ""))


@sleepers_group.command("backfill")
@click.option("--weeks", type=click.IntRange(1, 104), default=12, show_default=True,
              help="How many weeks before today (UTC) to reconstruct.")
@click.option("--level", "term_id", type=int, default=None, help="Only this level (default: all levels).")
@click.pass_context
def sleepers_backfill(ctx: click.Context, weeks: int, term_id: int | None) -> None:
    """Reconstruct the daily sleeper counts of past days from key dates, for the trend chart.

    Each day counts the sleepers the rule finds among the keys and certificates that existed then; days
    a refresh counted are kept, reconstructed days are replaced. A level's first refresh does this by
    itself; see docs/learning-monitor.md for what cannot be reconstructed.
    """
    from sidecar.monitor.backfill import TrendBackfill

    runtime = runtime_of(ctx)
    try:
        names = level_names(runtime)
        if term_id is not None and term_id not in names:
            raise click.BadParameter(f"there is no access level {term_id}", param_hint="--level")
        levels = [term_id] if term_id is not None else list(names)
        with click.progressbar(length=max(len(levels), 1), label="reconstructing the trend", file=sys.stderr) as bar:
            last = [0]

            def progress(done: int, _total: int) -> None:
                bar.update(done - last[0])
                last[0] = done

            reports = TrendBackfill(runtime).backfill_all(weeks, levels, progress=progress)
    finally:
        runtime.close()
    click.echo(text_table(
        ["LEVEL", "NAME", "FROM", "TO", "DAYS WRITTEN", "SECONDS"],
        [[r.term_id, clip(names.get(r.term_id, ""), 40), r.first_day, r.last_day, r.days_written, f"{r.seconds:.2f}"]
         for r in reports]))
    click.echo(f"{len(reports)} level(s) reconstructed over {weeks} week(s); days a refresh counted were kept")


@sleepers_group.command("list")
@click.option("--level", "levels", type=int, multiple=True, help="Only these levels (repeatable).")
@day_option("Sleepers as of this UTC day: from the stored report when it was built for that day, else "
            "evaluated live from the WordPress tables (slower on a large site). Default: the stored report.")
@click.option("--from", "expired_from", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Expired on or after this day.")
@click.option("--to", "expired_to", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Expired on or before this day.")
@click.option("--search", "-q", default="", help="Words of the name, e-mail or login.")
@click.option("--within", "within", type=click.IntRange(0, 36600), default=None,
              help="Only expiries in the last N days (days since expiry ≤ N, counted back from the UTC day listed).")
@click.option("--sort", type=click.Choice(["expired_on", "days_since", "name", "email", "level"]), default=None,
              help="Order (default: web.sleepers_order, most recent expiry first unless configured).")
@click.option("--desc/--asc", "desc", default=None,
              help="Descending or ascending (default: web.sleepers_order's direction for its column, else ascending).")
@click.option("--after", "cursor", default=None, help="Continue after a previous page (the cursor it printed).")
@click.option("--before", "before", default=None, help="The page before a previous page (its previous cursor).")
@click.option("--limit", type=click.IntRange(1, 1000), default=None,
              help="Rows to show (table/json: default 50, one page; csv: default all).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.pass_context
def sleepers_list(ctx: click.Context, levels: tuple[int, ...], day, expired_from, expired_to, within: int | None,
                  search: str, sort: str | None, desc: bool | None, cursor: str | None, before: str | None,
                  limit: int | None, fmt: str) -> None:
    """List sleepers from the last refresh (or as of --date), in the configured order (web.sleepers_order)."""
    import contextlib
    import itertools

    from sidecar.monitor.service import MonitorService, SleeperQuery
    from sidecar.monitor.csv_export import csv_chunks, export_chunks
    from sidecar.monitor.views import api_record

    if expired_from and expired_to and expired_from > expired_to:
        raise click.BadParameter("the window ends before it starts", param_hint="--to")
    runtime = runtime_of(ctx)
    try:
        unknown = sorted(set(levels) - set(level_names(runtime)))
        if unknown:
            raise click.BadParameter(f"no access level {', '.join(map(str, unknown))}", param_hint="--level")
        service = MonitorService(runtime)
        default_sort, default_desc = service.default_order()
        query = SleeperQuery(levels=tuple(dict.fromkeys(levels)),
                             expired_from=expired_from.date() if expired_from else None,
                             expired_to=expired_to.date() if expired_to else None, search=search.strip(),
                             sort=sort or default_sort,
                             descending=desc if desc is not None else default_desc if (sort or default_sort) == default_sort
                             else False,
                             after=cursor, before=before, limit=limit or 50, expired_within=within)
        live = day is not None and not service.stored_for(day, query.levels)
        with contextlib.ExitStack() as stack:
            progress = None
            if live:
                bar = stack.enter_context(click.progressbar(
                    length=1, label=f"evaluating sleepers for {day.isoformat()}", file=sys.stderr))

                def progress(done: int, total: int) -> None:
                    bar.length = total
                    bar.update(done - bar.pos)

            try:
                if fmt == "csv":
                    if live:
                        rows = service.iterate(query, day=day, progress=progress)
                        chunks = csv_chunks(itertools.islice(rows, limit) if limit else rows)
                    else:
                        chunks = export_chunks(service, query, day=day, limit=limit)
                    for chunk in chunks:
                        click.echo(chunk, nl=False)
                    return
                page = service.page(query, day=day, progress=progress)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--before" if before else "--after") from None
    finally:
        runtime.close()
    source = "live" if live else "report"
    if fmt == "json":
        click.echo(json.dumps({"as_of": day.isoformat() if day else None, "source": source, "total": page.total,
                               "page": page.page_number, "pages": page.pages, "next_cursor": page.next_cursor,
                               "prev_cursor": page.prev_cursor, "sleepers": [api_record(r) for r in page.rows]},
                              indent=2, ensure_ascii=False))
        return
    if not page.rows:
        click.echo("no sleepers match")
        return
    click.echo(text_table(
        ["USER", "EMAIL", "FIRST NAME", "LAST NAME", "LEVEL", "EXPIRED ON", "DAYS", "LAST GRANT", "REMINDERS", "BLOCKED"],
        [[r.user_id, r.email, clip(r.first_name, 20), clip(r.last_name, 20), clip(f"{r.term_id} {r.level_name}", 30),
          r.expired_on, r.days_since, r.last_grant or "", r.reminders_sent, "yes" if r.blocked else ""]
         for r in page.rows]))
    # On stderr so that piping the table elsewhere keeps only rows.
    as_of = f" as of {day.isoformat()} (UTC, {'evaluated live' if live else 'stored report'})" if day else ""
    click.echo(f"{len(page.rows)} of {page.total}, page {page.page_number} of {page.pages}{as_of}", err=True)
    if page.next_cursor:
        click.echo(f"more: add --after {page.next_cursor}", err=True)
    if page.prev_cursor:
        click.echo(f"previous page: add --before {page.prev_cursor}", err=True)


# --- the old plugin's report, side by side ---------------------------------------------------------

#: Exit code of `legacy compare` when some difference has no known reason (3 is a start-up failure).
EXIT_UNEXPLAINED = 4


@click.group("legacy")
def legacy_group() -> None:
    """The legacy learning-monitor plugin's report, next to the sidecar's (read-only)."""


def _when(c) -> list[str]:
    lines = [f"level     {c.term_id} {c.level_name}"]
    legacy_from, legacy_to = (d.isoformat() for d in c.legacy_window)
    lines.append(f"old       ml-learning-monitor's live query (V3): last key's date_end between {legacy_from} and "
                 f"{legacy_to} (both included, never compared with today); «Найдено» {c.legacy_count}, "
                 f"{c.legacy_rows} rows for {c.legacy_users} learners")
    if c.legacy_rows != c.legacy_users:
        lines.append("          (a learner whose last keys end on the same day is repeated: the old pages repeat "
                     "or skip them)")
    if not c.tables.hard_coded:
        lines.append(f"          run on this site's tables ({c.tables.users}, {c.tables.term_keys}, …): the plugin "
                     "itself hard-codes wp_ and fails on this site")
    lines.append(f"sidecar   the report's rule on {c.day.isoformat()} (UTC day): expired between "
                 f"{c.sidecar_window[0].isoformat()} and {c.sidecar_window_end.isoformat()}; {c.sidecar_users} sleepers")
    lines.append(f"compared  in both {c.in_both}; only in the old report {c.only_legacy}; only in the sidecar's "
                 f"{c.only_sidecar}")
    return lines


@legacy_group.command("compare")
@click.option("--level", "term_id", type=int, required=True, help="Access level (term_id).")
@click.option("--from", "date_from", type=UtcDay(), default=None, metavar="YYYY-MM-DD",
              help="Expired on or after this day (both reports; default: today, see --date).")
@click.option("--to", "date_to", type=UtcDay(), default=None, metavar="YYYY-MM-DD",
              help="Expired on or before this day (both reports; the sidecar never lists an expiry after D).")
@day_option("UTC day D the sidecar's rule is evaluated for (default: today, UTC). Without --from/--to both "
            "windows default to today: the old report's as its form did (the site's local day), the "
            "sidecar's to D; with --date both default to D.")
@click.option("--timeout", type=click.FloatRange(min=0), default=600, show_default=True,
              help="Stop each legacy statement after this many seconds (MariaDB/MySQL; 0 = no limit).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.pass_context
def legacy_compare(ctx: click.Context, term_id: int, date_from, date_to, day, timeout: float, fmt: str) -> None:
    """Run the old plugin's report and the sidecar's for one level, and say why each learner listed by
    only one of them is there (read-only). Exit code 0 when every difference has a reason, 4 when some
    has none (report them)."""
    from sidecar.csvsafe import SafeCsvWriter
    from sidecar.monitor.legacy_compare import (
        CompareInputError, LegacyQueryFailed, LegacyQueryTimeout, compare, compare_csv_rows, comparison_record,
    )
    from sidecar.monitor.display import LEGACY_REASONS

    runtime = runtime_of(ctx)
    try:
        if fmt == "table":
            click.echo("running the old report's query: on a large site it can take a minute…", err=True)
        try:
            c = compare(runtime, term_id, day=day, date_from=date_from, date_to=date_to, timeout=timeout or None)
        except LookupError as exc:
            raise click.BadParameter(str(exc), param_hint="--level") from None
        except CompareInputError as exc:
            raise click.BadParameter(str(exc), param_hint="--from/--to") from None
        except LegacyQueryTimeout:
            raise click.ClickException(f"the old report's query ran longer than {timeout:g} s and the database "
                                       "stopped it; give it more time with --timeout") from None
        except LegacyQueryFailed as exc:
            raise click.ClickException(f"the old report's query fails on this site: {exc}") from None
    finally:
        runtime.close()
    if fmt == "json":
        click.echo(json.dumps(comparison_record(c), indent=2, ensure_ascii=False))
    elif fmt == "csv":
        import io

        buffer = io.StringIO()
        SafeCsvWriter(buffer).writerows(compare_csv_rows(c))
        click.echo(buffer.getvalue(), nl=False)
    else:
        for line in _when(c):
            click.echo(line)
        click.echo("")
        click.echo(text_table(["REASON", "COUNT", "MEANING"],
                              [[code, n, LEGACY_REASONS[code].format("en")] for code, n in c.counts.items()]))
        if c.differences:
            click.echo("")
            click.echo(text_table(
                ["USER", "EMAIL", "OLD", "SIDECAR", "OLD LAST END", "SIDECAR X", "VERDICT", "REASON"],
                [[r.user_id, clip(r.email, 40), "yes" if r.in_legacy else "no", "yes" if r.in_sidecar else "no",
                  r.legacy_last_end or "", r.expired_on or "", r.verdict + (" (blocked)" if r.blocked else ""),
                  r.reason.value] for r in c.differences]))
        seconds = c.seconds
        click.echo(f"\ntook {seconds['total']:.2f} s: old query {seconds['legacy']:.2f} s, sidecar "
                   f"{seconds['sidecar']:.2f} s, reasons {seconds['reasons']:.2f} s", err=True)
    if c.unexplained:
        click.echo(f"{c.unexplained} difference(s) without a known reason: compare again (the data may have "
                   "changed between the two reads); if they stay, report them with this output and "
                   f"`mlsidecar explain --user <id> --level {c.term_id} --format json` for each", err=True)
        sys.exit(EXIT_UNEXPLAINED)  # click's Exit would be swallowed by main()'s non-standalone mode
