"""Learning-monitor pages: the levels overview, the sleepers table, one learner's keys, CSV and JSON.

Thin on purpose: every figure comes from :class:`MonitorService` (the read model, or a live
``explain`` for one learner) and refreshes go through :class:`SleeperRefresher`. The views only parse
parameters, pick the words and draw.

The same query parameters drive the table, its CSV export and the JSON API, so a link copied from the
browser works as an export or an API call: ``level`` (repeatable), ``expired_from``, ``expired_to``
(both inclusive, on the expiry day), ``within``, ``search``, ``sort``, ``desc``, ``after`` / ``before``
(page cursors), ``limit`` (see :mod:`sidecar.monitor.filters`). The pages drop an unusable parameter and say
so; the API answers 400 naming it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from sidecar.config import scopes_of
from sidecar.memberlux.reader import Level
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.increments import RefreshBusy
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.monitor.settings import LETTERS, MonitorSettings, SettingsError, validate
from sidecar.monitor.charts import TREND_WEEKS, key_timeline, sparkline
from sidecar.monitor.csv_export import export_chunks
from sidecar.monitor.display import Display, as_of, display_for, level_tree, verdict_sentence
from sidecar.monitor.filters import (
    API_MAX_PAGE, API_PER_PAGE, PAGE_SIZES, TRUE_WORDS, WITHIN_DAYS, Filters, Problem, parse_filters,
)
from sidecar.monitor.chain_display import chain_text
from sidecar.monitor.service import MonitorService, SleeperRow
from sidecar.monitor.settings_form import settings_fields, parse_settings_form
from sidecar.reminders.approval import is_approved
from sidecar.reminders.letters import DIGEST_VARIABLES, LEARNER_VARIABLES, RENEWAL_URL_VARIABLES
from sidecar.web import app_singleton, current_runtime
from sidecar.web.api import api_error as _api_error
from sidecar.web.api import matching_name
from sidecar.web.auth import csrf_exempt, current_admin, login_required
from sidecar.web.pages import actor
from sidecar.web.i18n import current_language, gettext, ngettext
from sidecar.web.messages import say

log = logging.getLogger(__name__)

blueprint = Blueprint("monitor", __name__)

STALE_AFTER = timedelta(days=1)
# Column sorts offered in the table header; first name is sorted together with the last name.
SORTABLE = {"email": "email", "last_name": "name", "expired_on": "expired_on", "days_since": "days_since",
            "level": "level"}


_runtime = current_runtime


def _service() -> MonitorService:
    # One instance per app: its level-name cache is worth sharing between requests.
    return app_singleton("mlsidecar.monitor", MonitorService)


# --- parameters -----------------------------------------------------------------------------------

# --- presentation helpers -------------------------------------------------------------------------

# --- CSV ------------------------------------------------------------------------------------------

def api_record(row: SleeperRow) -> dict[str, Any]:
    return {
        "user_id": row.user_id, "email": row.email, "login": row.login, "first_name": row.first_name,
        "last_name": row.last_name, "level_id": row.term_id, "level_name": row.level_name,
        "expired_on": row.expired_on.isoformat(), "last_access_day": row.last_access_day.isoformat(),
        "days_since": row.days_since, "last_grant": row.last_grant.isoformat() if row.last_grant else None,
        "blocked": row.blocked, "reminders_sent": row.reminders_sent,
        **({"reminders": chain_record(row.chain)} if row.chain is not None else {}),
    }


def chain_record(chain) -> dict[str, Any]:
    """Where the reminder chain stands, for the API (codes, not words: see docs/learning-monitor.md)."""
    return {
        "last_sent_step": chain.last_step,
        "last_sent_on": chain.last_sent_on.isoformat() if chain.last_sent_on else None,
        "next_step": chain.next_step,
        "next_due": chain.next_due.isoformat() if chain.next_due else None,
        "stopped": chain.stopped,
    }


# --- the overview ---------------------------------------------------------------------------------

@blueprint.get("/monitor")
@login_required
def overview():
    runtime = _runtime()
    service = _service()
    levels = runtime.reader.levels()
    display = display_for(runtime, levels)
    counts = service.counts_per_level()
    trend = service.trend(weeks=TREND_WEEKS)
    freshness = service.freshness()
    now = runtime.clock.now()
    rows = []
    for level, depth in level_tree(levels):
        fresh = freshness.get(level.term_id)
        rows.append({
            "level": level,
            "depth": min(depth, 4),
            "count": counts.get(level.term_id) if fresh is not None else None,
            "spark": sparkline(trend.get(level.term_id, []), display.today),
            "fresh": fresh,
            "as_of": as_of(now - fresh.current_as_of) if fresh is not None else None,
            "stale": fresh is None or fresh.stale or now - fresh.current_as_of > STALE_AFTER,
            "url": url_for(".sleepers", level=level.term_id),
            "settings_url": url_for(".level_settings", term_id=level.term_id),
        })
    total = sum(counts.get(level.term_id, 0) for level in levels)
    return render_template("monitor_overview.html", rows=rows, fmt=display, total=total,
                           any_stale=any(r["stale"] for r in rows), weeks=TREND_WEEKS)


@blueprint.post("/monitor/refresh")
@login_required
def refresh():
    runtime = _runtime()
    admin = current_admin()
    raw = (request.form.get("level") or "").strip()
    refresher = SleeperRefresher(runtime)
    started = time.monotonic()
    try:
        return _refresh(runtime, refresher, raw, admin, started)
    except RefreshBusy:
        flash(gettext("The worker is updating the report right now and did not finish within two minutes; "
                "try again shortly."), "error")
        return redirect(url_for(".overview"))


def _refresh(runtime, refresher: SleeperRefresher, raw: str, admin, started: float):
    if raw:
        names = {level.term_id: level.name for level in runtime.reader.levels()}
        if not raw.isdecimal() or len(raw) > 19 or int(raw) not in names:
            flash(Problem("level", "unknown_level", raw[:40]).message(), "error")
            return redirect(url_for(".overview"))
        term_id = int(raw)
        # New or deleted certificates since the last scan must count, as in a full refresh.
        CertificateClassifier(runtime).sync()
        report = refresher.refresh_level(term_id)
        seconds = time.monotonic() - started
        flash(ngettext("Level «{name}» refreshed in {seconds} s: {n} sleeper.", "Level «{name}» refreshed in {seconds} s: {n} sleepers.",
                       report.sleepers, name=names[term_id], seconds=Display.seconds(seconds)), "ok")
    else:
        reports = refresher.refresh_all()
        seconds = time.monotonic() - started
        flash(ngettext("{levels} levels refreshed in {seconds} s: {n} sleeper in total.",
                       "{levels} levels refreshed in {seconds} s: {n} sleepers in total.",
                       sum(r.sleepers for r in reports), levels=len(reports), seconds=Display.seconds(seconds)), "ok")
    log.info("sleepers refreshed by %s (%s) in %.2f s", admin.login if admin else "?", raw or "all levels", seconds)
    return redirect(url_for(".overview"))


# --- the sleepers table ---------------------------------------------------------------------------

def _sort_link(filters: Filters, column: str) -> dict[str, Any]:
    sort = SORTABLE[column]
    active = filters.sort == sort
    descending = (not filters.descending) if active else False
    return {
        "url": filters.url(sort=sort, descending=descending, after=None, before=None),
        "active": active,
        "aria": ("descending" if filters.descending else "ascending") if active else None,
        "arrow": ("▼" if filters.descending else "▲") if active else "",
    }


def _list_page(service: MonitorService, filters: Filters, problems: list[Problem]):
    """The page of ``filters``; a cursor from another order or a mangled link shows the first page."""
    try:
        return filters, service.page(filters.query())
    except ValueError:
        problems.append(Problem("before" if filters.before else "after", "bad_cursor"))
        filters = replace(filters, after=None, before=None)
        return filters, service.page(filters.query())


@blueprint.get("/monitor/sleepers")
@login_required
def sleepers():
    runtime = _runtime()
    service = _service()
    levels = runtime.reader.levels()
    display = display_for(runtime, levels)
    filters, problems = parse_filters(request.args, known_levels=[lv.term_id for lv in levels],
                                      default_order=service.default_order())
    filters, page = _list_page(service, filters, problems)
    freshness = service.freshness()
    shown = filters.levels or tuple(lv.term_id for lv in levels)
    now = runtime.clock.now()
    stale = [display.level(t) for t in shown
             if t not in freshness or freshness[t].stale or now - freshness[t].current_as_of > STALE_AFTER]
    checked = [freshness[t].current_as_of for t in shown if t in freshness]
    current = as_of(now - min(checked)) if checked else None
    first_page = {"after": None, "before": None}
    return render_template(
        "monitor_sleepers.html", page=page, filters=filters, problems=[p.message() for p in problems],
        fmt=display, levels=level_tree(levels), sorts={c: _sort_link(filters, c) for c in SORTABLE},
        stale=stale, evaluated_for=display.today, current=current,
        chains={(row.user_id, row.term_id): chain_text(row.chain) for row in page.rows},
        first_url=filters.url(**first_page) if page.page_number > 1 else None,
        prev_url=filters.url(after=None, before=page.prev_cursor) if page.prev_cursor else None,
        next_url=filters.url(after=page.next_cursor, before=None) if page.next_cursor else None,
        sizes=[(size, filters.url(limit=size, **first_page), size == filters.limit) for size in PAGE_SIZES],
        withins=[(days, filters.url(expired_within=days, **first_page), days == filters.expired_within)
                 for days in WITHIN_DAYS],
        within_all_url=filters.url(expired_within=None, **first_page),
        within_since=(display.today - timedelta(days=filters.expired_within)) if filters.expired_within else None,
        csv_url=filters.url(".sleepers_csv", limit=filters.default_limit, **first_page),
        excel_url=url_for(".sleepers_csv", excel=1, **filters.args(limit=filters.default_limit, **first_page)),
        reset_url=url_for(".sleepers"),
    )


@blueprint.get("/monitor/sleepers.csv")
@login_required
def sleepers_csv():
    runtime = _runtime()
    # Unusable filters are dropped, as on the page.
    filters, _problems = parse_filters(request.args, default_order=_service().default_order())
    excel = (request.args.get("excel") or "").strip().lower() in TRUE_WORDS
    chunks = export_chunks(_service(), filters.query(paged=False), excel=excel)
    day = runtime.clock.today_utc().isoformat()
    name = f"sleepers-level-{filters.levels[0]}-{day}.csv" if len(filters.levels) == 1 else f"sleepers-{day}.csv"
    response = Response(chunks, mimetype="text/csv")
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"  # personal data
    response.headers["X-Accel-Buffering"] = "no"    # let nginx pass the stream through as it comes
    return response


# --- one learner --------------------------------------------------------------------------------

@blueprint.get("/monitor/users/<int:user_id>")
@login_required
def user_page(user_id: int):
    runtime = _runtime()
    service = _service()
    user = runtime.reader.user(user_id)
    if user is None:
        abort(404, description=gettext("There is no WordPress user {id}.", id=user_id))
    display = display_for(runtime)
    term_ids = list(dict.fromkeys(row.term_id for row in runtime.reader.key_rows(user_id) if row.term_id))
    sections = []
    for level, _depth in level_tree([lv for lv in runtime.reader.levels() if lv.term_id in term_ids]):
        explanation = service.explain(user_id, level.term_id)
        sections.append({"e": explanation, "sentence": verdict_sentence(explanation),
                         "timeline": key_timeline(explanation.keys, explanation.day)})
    known = {s["e"].term_id for s in sections}
    missing = [t for t in term_ids if t not in known]  # keys of deleted levels
    return render_template("monitor_user.html", user=user, sections=sections, missing=missing, fmt=display,
                           one_day=timedelta(days=1),
                           back_url=request.referrer if _same_site(request.referrer) else url_for(".sleepers"))


def _same_site(url: str | None) -> bool:
    # Back to the filtered list the admin came from; anything else (another site, this page) gets the plain list.
    return bool(url) and url.startswith(request.host_url + "monitor/sleepers")  # type: ignore[operator, union-attr]


# --- per-level settings --------------------------------------------------------------------------

def _variables(variables: Mapping[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """A template's variables with their meaning in the page's language."""
    russian = current_language() == "ru"
    return [(name, ru if russian else en) for name, (en, ru) in variables.items()]


def _level_or_404(term_id: int) -> Level:
    level = next((lv for lv in _runtime().reader.levels() if lv.term_id == term_id), None)
    if level is None:
        abort(404, description=gettext("There is no level {id} on the site.", id=term_id))
    return level


def _render_settings(level: Level, service: MonitorSettings, *, values: dict[str, Any] | None = None,
                     errors: dict[str, str] | None = None, status: int = 200):
    imported, effective = service.imported(level.term_id), service.effective(level.term_id)
    imported_fields, effective_fields = settings_fields(imported), settings_fields(effective)
    shown = values if values is not None else effective_fields
    fields = {}
    for name, value in effective_fields.items():
        root = name.split(".", 1)[0]
        # "letters" is stored as one override: only the letter fields that differ count as changed.
        overridden = root in effective.overridden and value != imported_fields[name]
        fields[name] = {"name": name, "value": "" if shown[name] is None else shown[name],
                        "imported": imported_fields[name], "overridden": overridden,
                        "error": (errors or {}).get(name)}
    with _runtime().sessions() as session:
        approved = is_approved(session, level.term_id)
    return render_template("monitor_settings.html", level=level, fields=fields, letters=range(1, LETTERS + 1),
                           approved=approved,
                           any_override=bool(effective.overridden), has_errors=bool(errors),
                           learner_variables=_variables(LEARNER_VARIABLES), digest_variables=_variables(DIGEST_VARIABLES),
                           renewal_variables=_variables(RENEWAL_URL_VARIABLES),
                           preview_letters=("1", "2", "3", "admin")), status


@blueprint.get("/monitor/levels/<int:term_id>/settings")
@login_required
def level_settings(term_id: int):
    level = _level_or_404(term_id)
    return _render_settings(level, MonitorSettings(_runtime()))


@blueprint.post("/monitor/levels/<int:term_id>/settings")
@login_required
def save_level_settings(term_id: int):
    level = _level_or_404(term_id)
    service = MonitorSettings(_runtime())
    settings, not_numbers, raw = parse_settings_form(term_id, request.form)
    errors: dict[str, str] = {}
    try:
        validate(settings)
    except SettingsError as exc:
        errors = {name: say(message) for name, message in exc.errors.items()}
    errors.update(not_numbers)  # "not a number" says more than a rule applied to the blanked value
    if not errors:
        try:
            service.save(settings, actor=actor())
        except SettingsError as exc:
            errors = {name: say(message) for name, message in exc.errors.items()}
    if errors:
        return _render_settings(level, service, values=raw, errors=errors, status=422)
    flash(gettext("Settings of «{name}» saved.", name=level.name), "ok")
    return redirect(url_for(".level_settings", term_id=term_id))


@blueprint.post("/monitor/levels/<int:term_id>/settings/reset")
@login_required
def reset_level_settings(term_id: int):
    level = _level_or_404(term_id)
    MonitorSettings(_runtime()).reset(term_id, actor=actor())
    flash(gettext("«{name}» follows the WordPress values again.", name=level.name), "ok")
    return redirect(url_for(".level_settings", term_id=term_id))


# --- JSON API -------------------------------------------------------------------------------------

def _configured_tokens() -> list[tuple[str, str]] | None:
    """``[(name, token)]`` from ``web.api_tokens``; ``None`` when this build has no such setting."""
    settings = _runtime().settings.web
    if not hasattr(settings, "api_tokens"):
        return None
    configured = settings.api_tokens or {}
    items = configured.items() if isinstance(configured, Mapping) else enumerate(configured)
    tokens = []
    for name, secret in items:
        value = secret.reveal() if hasattr(secret, "reveal") else str(secret)
        if value:
            tokens.append((str(name), value))
    return tokens


def _api_principal() -> tuple[str | None, Response | None]:
    """Who is calling: ``("token:<name>" | "admin:<login>", None)``, or ``(None, a 401 response)``."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, sent = header.partition(" ")
        tokens = _configured_tokens()
        if not tokens:
            return None, _api_error(401, "tokens_not_configured",
                                    "API tokens are not configured on this sidecar (web.api_tokens); "
                                    "sign in as an administrator or ask the operator for a token")
        if scheme.lower() != "bearer" or not sent.strip():
            return None, _api_error(401, "bad_authorization", "use 'Authorization: Bearer <token>'")
        matched = matching_name(sent.strip(), tokens)
        if matched is None:
            log.warning("sleepers API: unknown bearer token from %s", request.remote_addr)
            return None, _api_error(401, "bad_token", "the bearer token is not valid")
        # A token names what it may do; one made only to enrol learners does not read the report.
        held = scopes_of(_runtime().settings.web.api_tokens.get(matched))
        if "read" not in held:
            denied = _api_error(403, "insufficient_scope",
                                f"the token web.api_tokens.{matched} lacks the 'read' scope "
                                f"(it has: {', '.join(sorted(held)) or 'none'})", required_scope="read")
            denied.headers["WWW-Authenticate"] = 'Bearer realm="mlsidecar", error="insufficient_scope", scope="read"'
            return None, denied
        return f"token:{matched}", None
    admin = current_admin()
    if admin is not None:
        return f"admin:{admin.login}", None
    if not _configured_tokens():
        return None, _api_error(401, "tokens_not_configured",
                                "API tokens are not configured on this sidecar (web.api_tokens); "
                                "sign in as an administrator or ask the operator for a token")
    return None, _api_error(401, "unauthorized", "send 'Authorization: Bearer <token>'")


@blueprint.get("/api/v1/sleepers")
@csrf_exempt
def api_sleepers():
    principal, denied = _api_principal()
    if denied is not None:
        return denied
    runtime = _runtime()
    known = [level.term_id for level in runtime.reader.levels()]
    filters, problems = parse_filters(request.args, default_limit=API_PER_PAGE, max_limit=API_MAX_PAGE,
                                      known_levels=known, default_order=_service().default_order())
    if problems:
        first = problems[0]
        return _api_error(400, "invalid_parameter", first.message("en"), field=first.field,
                          errors=[{"field": p.field, "message": p.message("en")} for p in problems])
    try:
        page = _service().page(filters.query())
    except ValueError as exc:
        field = "before" if filters.before else "after"
        return _api_error(400, "invalid_parameter", str(exc), field=field,
                          errors=[{"field": field, "message": str(exc)}])
    log.debug("sleepers API page for %s", principal)
    body = {
        "ok": True,
        "evaluated_for": runtime.clock.today_utc().isoformat(),
        "total": page.total,
        "limit": filters.limit,
        "sort": filters.sort,
        "desc": filters.descending,
        "within": filters.expired_within,
        "page": page.page_number,
        "pages": page.pages,
        "next_cursor": page.next_cursor,
        "next_url": filters.url(".api_sleepers", after=page.next_cursor, before=None) if page.next_cursor else None,
        "prev_cursor": page.prev_cursor,
        "prev_url": filters.url(".api_sleepers", after=None, before=page.prev_cursor) if page.prev_cursor else None,
        "sleepers": [api_record(row) for row in page.rows],
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


# --- the old plugin's report, side by side ------------------------------------------------------------

#: Rows of differences the page shows; the CSV holds them all.
LEGACY_SHOWN = 500
#: How long a comparison's result serves the CSV link of its page without running the queries again.
LEGACY_REUSE_SECONDS = 600.0


def _legacy_params(args: Mapping[str, str], known: set[int]) -> tuple[dict[str, Any], list[str]]:
    """``level``, ``from``, ``to``, ``date`` from the query string; problems as sentences."""
    from sidecar.web.pages import query_day

    problems: list[str] = []
    raw = (args.get("level") or "").strip()
    level = None
    if not raw:
        problems.append(gettext("Choose a level."))
    elif not (raw.isascii() and raw.isdecimal() and len(raw) <= 19):
        problems.append(gettext("{value} is not a level id.", value=raw[:40]))
    elif int(raw) not in known:
        problems.append(gettext("There is no level {value} on the site.", value=raw))
    else:
        level = int(raw)
    days: dict[str, Any] = {}
    for name in ("from", "to", "date"):
        days[name], unusable = query_day(args, name)
        if unusable is not None:
            problems.append(gettext("{field}: not a date: {value} (use YYYY-MM-DD).", field=name, value=unusable))
    return {"level": level, **days}, problems


def _legacy_comparison(params: dict[str, Any]):
    """The comparison for these parameters: a recent one with the same parameters, else run now (one at a
    time per process). Raises what :func:`sidecar.monitor.legacy_compare.compare` raises, and ``Busy``."""
    from flask import current_app

    from sidecar.monitor.legacy_compare import PAGE_TIMEOUT_SECONDS, compare, exclusive

    key = tuple(sorted((name, str(value)) for name, value in params.items()))
    recent = current_app.extensions.setdefault("mlsidecar.legacy_compare", {})
    found = recent.get("last")
    if found is not None and found[0] == key and time.monotonic() - found[1] < LEGACY_REUSE_SECONDS:
        return found[2]
    comparison = exclusive(lambda: compare(_runtime(), params["level"], day=params["date"],
                                           date_from=params["from"], date_to=params["to"],
                                           timeout=PAGE_TIMEOUT_SECONDS))
    recent["last"] = (key, time.monotonic(), comparison)  # one result, so memory stays bounded
    return comparison


def _legacy_failure(exc: Exception, level: int) -> str:
    from sidecar.monitor.legacy_compare import (
        PAGE_TIMEOUT_SECONDS, Busy, CompareInputError, LegacyQueryTimeout,
    )

    if isinstance(exc, Busy):
        return gettext("Another comparison is running; try again in a minute.")
    if isinstance(exc, LegacyQueryTimeout):
        return gettext("The old report's query ran longer than {seconds} s and the database stopped it. Run “mlsidecar legacy compare "
                       "--level {level}” on the server: it waits longer.", seconds=f"{PAGE_TIMEOUT_SECONDS:g}", level=level)
    if isinstance(exc, CompareInputError):
        return gettext("The window ends on {end}, before it starts on {start} (an empty day "
                       "is today).", start=exc.start.isoformat(), end=exc.end.isoformat())
    return gettext("The old report's query fails on this site: {error}", error=str(exc))


@blueprint.get("/monitor/legacy")
@login_required
def legacy_compare_page():
    from sidecar.monitor.legacy_compare import PAGE_TIMEOUT_SECONDS, Busy, LegacyQueryFailed
    from sidecar.monitor.legacy_compare import CompareInputError

    runtime = _runtime()
    levels = runtime.reader.levels()
    context: dict[str, Any] = {"levels": level_tree(levels), "fmt": display_for(runtime, levels),
                               "timeout": f"{PAGE_TIMEOUT_SECONDS:g}", "shown": LEGACY_SHOWN, "args": request.args,
                               "problems": [], "comparison": None, "csv_url": None}
    if not request.args:
        return render_template("monitor_legacy.html", **context)
    params, problems = _legacy_params(request.args, {lv.term_id for lv in levels})
    if problems:
        return render_template("monitor_legacy.html", **{**context, "problems": problems}), 400
    try:
        comparison = _legacy_comparison(params)
    except Busy as exc:
        response = Response(render_template("monitor_legacy.html",
                                            **{**context, "problems": [_legacy_failure(exc, params["level"])]}),
                            status=429)
        response.headers["Retry-After"] = "30"
        return response
    except CompareInputError as exc:
        return render_template("monitor_legacy.html",
                               **{**context, "problems": [_legacy_failure(exc, params["level"])]}), 400
    except LegacyQueryFailed as exc:
        log.warning("legacy comparison of level %s failed: %s", params["level"], exc)
        return render_template("monitor_legacy.html",
                               **{**context, "problems": [_legacy_failure(exc, params["level"])]}), 503
    csv_args = {name: (value.isoformat() if hasattr(value, "isoformat") else value)
                for name, value in params.items() if value is not None}
    return render_template("monitor_legacy.html", **{**context, "comparison": comparison,
                                                     "csv_url": url_for(".legacy_compare_csv", **csv_args)})


@blueprint.get("/monitor/legacy.csv")
@login_required
def legacy_compare_csv():
    import io

    from sidecar.csvsafe import SafeCsvWriter
    from sidecar.monitor.legacy_compare import Busy, CompareInputError, LegacyQueryFailed, compare_csv_rows

    runtime = _runtime()
    params, problems = _legacy_params(request.args, {lv.term_id for lv in runtime.reader.levels()})
    if problems:
        return Response("\n".join(problems) + "\n", status=400, mimetype="text/plain")
    try:
        comparison = _legacy_comparison(params)
    except (Busy, CompareInputError, LegacyQueryFailed) as exc:
        status = 429 if isinstance(exc, Busy) else 400 if isinstance(exc, CompareInputError) else 503
        return Response(_legacy_failure(exc, params["level"]) + "\n", status=status, mimetype="text/plain")
    buffer = io.StringIO()
    SafeCsvWriter(buffer).writerows(compare_csv_rows(comparison))
    name = f"legacy-compare-level-{comparison.term_id}-{comparison.day.isoformat()}.csv"
    response = Response(buffer.getvalue(), mimetype="text/csv")
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"  # personal data
    return response
