"""Learning-monitor pages: the levels overview, the sleepers table, one learner's keys, CSV and JSON.

Thin on purpose: every figure comes from :class:`MonitorService` (the read model, or a live
``explain`` for one learner) and refreshes go through :class:`SleeperRefresher`. The views only parse
parameters, pick the words and draw.

The same query parameters drive the table, its CSV export and the JSON API, so a link copied from the
browser works as an export or an API call: ``level`` (repeatable), ``expired_from``, ``expired_to``
(both inclusive, on the expiry day), ``search``, ``sort``, ``desc``, ``after`` (page cursor), ``limit``.
The pages drop an unusable parameter and say so; the API answers 400 naming it.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone, tzinfo
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
from markupsafe import Markup, escape

from sidecar.bootstrap import Runtime
from sidecar.memberlux.reader import Level
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.monitor.refresh import SleeperRefresher
from sidecar.monitor.settings import LETTERS, Letter, LevelSettings, MonitorSettings, SettingsError, validate
from sidecar.monitor.service import SORTS, Explanation, KeyFact, MonitorService, SleeperQuery, SleeperRow
from sidecar.reminders.letters import DIGEST_VARIABLES, LEARNER_VARIABLES, RENEWAL_URL_VARIABLES
from sidecar.status import site_timezone
from sidecar.web import app_singleton, current_runtime
from sidecar.web.api import api_error as _api_error
from sidecar.web.api import matching_name
from sidecar.web.auth import csrf_exempt, current_admin, login_required
from sidecar.web.pages import actor
from sidecar.web.i18n import current_language, translate

log = logging.getLogger(__name__)

blueprint = Blueprint("monitor", __name__)

PER_PAGE = 20             # the legacy report's page size
MAX_PAGE = 200
API_PER_PAGE = 100
API_MAX_PAGE = 500
MAX_SEARCH = 200
TREND_WEEKS = 12
STALE_AFTER = timedelta(days=1)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
# Column sorts offered in the table header; first name is sorted together with the last name.
SORTABLE = {"email": "email", "last_name": "name", "expired_on": "expired_on", "days_since": "days_since",
            "level": "level"}


_runtime = current_runtime


def _service() -> MonitorService:
    # One instance per app: its level-name cache is worth sharing between requests.
    return app_singleton("mlsidecar.monitor", MonitorService)


# --- parameters -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One unusable parameter: the field, an i18n code and the value as sent (shortened)."""

    field: str
    code: str
    value: str = ""

    def message(self, language: str | None = None) -> str:
        return translate(f"monitor.error.{self.code}", language, field=self.field, value=self.value)


@dataclass(frozen=True)
class Filters(SleeperQuery):
    """The service's query as the page's URL carries it (the page size default differs per view)."""

    default_limit: int = PER_PAGE

    def query(self, *, paged: bool = True) -> SleeperQuery:
        return self if paged else replace(self, after=None)

    def args(self, **changes: Any) -> dict[str, Any]:
        """The filters as URL parameters, defaults left out (a list value repeats the parameter)."""
        f = replace(self, **changes)
        values: dict[str, Any] = {
            "level": [str(t) for t in f.levels],
            "expired_from": f.expired_from.isoformat() if f.expired_from else "",
            "expired_to": f.expired_to.isoformat() if f.expired_to else "",
            "search": f.search,
            "sort": f.sort if f.sort != "expired_on" else "",
            "desc": "1" if f.descending else "",
            "after": f.after or "",
            "limit": str(f.limit) if f.limit != f.default_limit else "",
        }
        return {key: value for key, value in values.items() if value}

    def url(self, endpoint: str = ".sleepers", **changes: Any) -> str:
        return url_for(endpoint, **self.args(**changes))


def _parse_day(args: Mapping[str, str], name: str, problems: list[Problem]) -> date | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(Problem(name, "bad_date", raw[:40]))
        return None


def parse_filters(args: Any, *, default_limit: int = PER_PAGE, max_limit: int = MAX_PAGE,
                  known_levels: Iterable[int] | None = None) -> tuple[Filters, list[Problem]]:
    """Filters from a query string (a MultiDict); every unusable parameter becomes a :class:`Problem`."""
    problems: list[Problem] = []
    known = set(known_levels) if known_levels is not None else None
    levels: list[int] = []
    for raw in args.getlist("level"):
        for part in raw.split(","):  # "level=7,9" is accepted too, for hand-written API calls
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or int(part) <= 0:
                problems.append(Problem("level", "bad_level", part[:40]))
            elif known is not None and int(part) not in known:
                problems.append(Problem("level", "unknown_level", part))
            elif int(part) not in levels:
                levels.append(int(part))
    expired_from = _parse_day(args, "expired_from", problems)
    expired_to = _parse_day(args, "expired_to", problems)
    if expired_from and expired_to and expired_from > expired_to:
        problems.append(Problem("expired_to", "bad_range", expired_to.isoformat()))
        expired_to = None
    search = (args.get("search") or "").strip()
    if len(search) > MAX_SEARCH:
        problems.append(Problem("search", "too_long", str(MAX_SEARCH)))
        search = search[:MAX_SEARCH]
    sort = (args.get("sort") or "expired_on").strip()
    if sort not in SORTS:
        problems.append(Problem("sort", "bad_sort", sort[:40]))
        sort = "expired_on"
    raw_desc = (args.get("desc") or "").strip().lower()
    descending = raw_desc in _TRUE
    if raw_desc not in _TRUE | _FALSE:
        problems.append(Problem("desc", "bad_flag", raw_desc[:40]))
    limit = default_limit
    raw_limit = (args.get("limit") or "").strip()
    if raw_limit:
        if raw_limit.isdigit() and 1 <= int(raw_limit) <= max_limit:
            limit = int(raw_limit)
        else:
            problems.append(Problem("limit", "bad_limit", raw_limit[:40]))
    after = (args.get("after") or "").strip() or None
    filters = Filters(levels=tuple(levels), expired_from=expired_from, expired_to=expired_to, search=search,
                      sort=sort, descending=descending, after=after, limit=limit, default_limit=default_limit)
    return filters, problems


# --- presentation helpers -------------------------------------------------------------------------

# The classifier stores its reason in English (sidecar.domain.certificates); the page shows it translated.
_CERT_REASONS = {
    "level issues certificates by hand": "monitor.cert.reason.level_manual",
    "issue or insert date missing: not written by auto issue": "monitor.cert.reason.missing_dates",
    "issue date chosen differs from the insert date": "monitor.cert.reason.date_differs",
    "no activation of this level by the user that day": "monitor.cert.reason.no_activation",
    "issued with a key activation on an auto level": "monitor.cert.reason.auto",
}
# Likewise the service's note on a key row that does not count (sidecar.monitor.service._key_facts).
_KEY_NOTES = {
    "never activated": "monitor.key.note.new",
    "banned (revoked by an administrator)": "monitor.key.note.banned",
    "in the basket, which the access policy excludes": "monitor.key.note.basket",
    "start or end date missing (zero date)": "monitor.key.note.zero_date",
}


class Display:
    """Site-zone and UTC times, level names and small labels shared by the monitor templates."""

    def __init__(self, zone: tzinfo, levels: Sequence[Level], today: date) -> None:
        self.zone = zone
        self.zone_name = str(zone)
        self.names = {level.term_id: level.name for level in levels}
        self.today = today

    def local(self, moment: datetime | None) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M") if moment else "—"

    def utc(self, moment: datetime | None) -> str:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if moment else "—"

    def level(self, term_id: int | None) -> str:
        if term_id is None:
            return "—"
        name = self.names.get(term_id)
        return name if name else translate("monitor.level_missing", id=term_id)

    @staticmethod
    def day(value: date | None) -> str:
        return value.isoformat() if value else "—"

    @staticmethod
    def yes_no(value: bool) -> str:
        return translate("monitor.yes") if value else translate("monitor.no")

    @staticmethod
    def key_note(text: str) -> str:
        key = _KEY_NOTES.get(text)
        return translate(key) if key else text

    @staticmethod
    def cert_reason(text: str) -> str:
        key = _CERT_REASONS.get(text)
        return translate(key) if key else text

    @staticmethod
    def seconds(value: float) -> str:
        return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _display(runtime: Runtime, levels: Sequence[Level] | None = None) -> Display:
    zone, _source = site_timezone(runtime)
    return Display(zone, runtime.reader.levels() if levels is None else levels, runtime.clock.today_utc())


def level_tree(levels: Sequence[Level]) -> list[tuple[Level, int]]:
    """Levels in hierarchy order (each parent followed by its children) with their depth.

    A level whose parent is missing (deleted, or another taxonomy) is shown at the top; a parent cycle
    (never written by WordPress, but the data is not ours) cannot loop: each level appears once.
    """
    ids = {level.term_id for level in levels}
    children: dict[int, list[Level]] = {}
    roots: list[Level] = []
    for level in levels:  # keeps the reader's order (MemberLux's custom order, then name) among siblings
        if level.parent and level.parent in ids and level.parent != level.term_id:
            children.setdefault(level.parent, []).append(level)
        else:
            roots.append(level)
    ordered: list[tuple[Level, int]] = []
    seen: set[int] = set()

    def visit(level: Level, depth: int) -> None:
        if level.term_id in seen:
            return
        seen.add(level.term_id)
        ordered.append((level, depth))
        for child in children.get(level.term_id, ()):
            visit(child, depth + 1)

    for root in roots:
        visit(root, 0)
    for level in levels:  # only members of a cycle are left
        visit(level, 0)
    return ordered


def sparkline(points: Sequence[tuple[date, int]], today: date, weeks: int = TREND_WEEKS,
              width: int = 120, height: int = 24) -> Markup:
    """An inline SVG of daily sleeper counts over the last ``weeks`` weeks, drawn on the server.

    Days are placed on a real time axis, so a gap between refreshes shows as a straight segment
    rather than being squeezed away. Styling lives in app.css (the CSP forbids inline styles).
    """
    if not points:
        return Markup('<span class="muted">—</span>')
    start = today - timedelta(weeks=weeks)
    span = max((today - start).days, 1)
    top = max(count for _day, count in points) or 1
    pad = 2.0

    def xy(day: date, count: int) -> tuple[float, float]:
        x = pad + (width - 2 * pad) * min(max((day - start).days, 0), span) / span
        y = height - pad - (height - 2 * pad) * count / top
        return round(x, 1), round(y, 1)

    coords = [xy(day, count) for day, count in points]
    last_day, last_count = points[-1]
    label = translate("monitor.trend.label", weeks=weeks, low=min(c for _d, c in points), high=top,
                      last=last_count, day=last_day.isoformat())
    parts = [f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>',
             f'<line class="spark-base" x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"/>']
    if len(coords) > 1:
        points = " ".join(f"{x},{y}" for x, y in coords)
        parts.append(f'<polyline class="spark-line" points="{points}"/>')
    x, y = coords[-1]
    parts.append(f'<circle class="spark-dot" cx="{x}" cy="{y}" r="2"/></svg>')
    return Markup("".join(parts))  # noqa: S704 - numbers and escaped labels only


def key_timeline(keys: Sequence[KeyFact], day: date, width: int = 640, bar: int = 14) -> Markup:
    """The key rows of one level as bars on a time axis, with the evaluation day marked.

    Unlimited keys run to the right edge; keys without dates (never activated, zero dates) are left
    out of the drawing and stay visible in the table below it.
    """
    drawn = [k for k in keys if k.date_start is not None and (k.date_end is not None or k.unlimited)]
    if not drawn:
        return Markup("")
    first = min(k.date_start for k in drawn)  # type: ignore[type-var]
    last = max([day] + [k.date_end for k in drawn if k.date_end is not None]) + timedelta(days=1)
    span = max((last - first).days, 1)
    gutter = 4
    height = gutter * 2 + len(drawn) * (bar + 4) + 14

    def x(value: date) -> float:
        return round(gutter + (width - 2 * gutter) * (value - first).days / span, 1)

    parts = [f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(translate("monitor.user.timeline"))}">']
    for i, key in enumerate(drawn):
        top = gutter + i * (bar + 4)
        start = x(key.date_start)  # type: ignore[arg-type]
        end = width - gutter if key.unlimited or key.date_end is None else x(key.date_end)
        kind = ("banned" if key.banned else "unlimited" if key.unlimited else "basket" if key.basket
                else "ignored" if not key.counts else "active" if key.active_on_day else "past")
        tip = translate("monitor.user.bar", id=key.key_id, start=key.date_start.isoformat(),  # type: ignore[union-attr]
                        end=key.date_end.isoformat() if key.date_end and not key.unlimited
                        else translate("monitor.key.unlimited"))
        parts.append(f'<rect class="bar bar-{kind}" x="{start}" y="{top}" width="{max(end - start, 2)}" '
                     f'height="{bar}" rx="2"><title>{escape(tip)}</title></rect>')
    axis = height - 12
    today_x = x(day)
    parts.append(f'<line class="axis" x1="{gutter}" y1="{axis}" x2="{width - gutter}" y2="{axis}"/>')
    parts.append(f'<line class="today" x1="{today_x}" y1="0" x2="{today_x}" y2="{axis}"/>')
    parts.append(f'<text class="tick" x="{gutter}" y="{height - 1}">{first.isoformat()}</text>')
    parts.append(f'<text class="tick end" x="{width - gutter}" y="{height - 1}">{(last - timedelta(days=1)).isoformat()}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers, dates and escaped labels only


def verdict_sentence(explanation: Explanation) -> str:
    """The reason code of a verdict as a sentence in the page's language."""
    verdict = explanation.verdict
    text = translate(
        f"monitor.reason.{verdict.reason.value}",
        x=verdict.expired_on.isoformat() if verdict.expired_on else "—",
        day=explanation.day.isoformat(),
        days=verdict.days_since_expiry(explanation.day) if verdict.expired_on else "—",
    )
    if verdict.blocked:
        text += " " + translate("monitor.reason.blocked")
    return text


# --- CSV ------------------------------------------------------------------------------------------

CSV_COLUMNS = ("user_id", "email", "login", "first_name", "last_name", "level_id", "level_name", "expired_on",
               "last_access_day", "days_since", "last_grant", "blocked", "reminders_sent")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_record(row: SleeperRow) -> list[Any]:
    return [row.user_id, row.email, row.login, row.first_name, row.last_name, row.term_id, row.level_name,
            row.expired_on.isoformat(), row.last_access_day.isoformat(), row.days_since,
            row.last_grant.isoformat() if row.last_grant else "", 1 if row.blocked else 0, row.reminders_sent]


def _defuse(value: Any) -> Any:
    # Names and e-mails are typed by learners: in a spreadsheet "=HYPERLINK(...)" would run as a formula.
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_chunks(rows: Iterable[SleeperRow], *, excel: bool = False, batch: int = 200) -> Iterator[str]:
    """The export as text chunks: header first, then rows, a few hundred per chunk.

    ``excel``: a UTF-8 byte-order mark and ``;`` as separator (what Excel expects where the decimal
    comma is in use, e.g. Russian locales), and cells that would start a formula are neutralised.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";" if excel else ",", lineterminator="\r\n")
    if excel:
        buffer.write("\ufeff")
    writer.writerow(CSV_COLUMNS)
    pending = 0
    for row in rows:
        record = csv_record(row)
        writer.writerow([_defuse(v) for v in record] if excel else record)
        pending += 1
        if pending >= batch:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


def api_record(row: SleeperRow) -> dict[str, Any]:
    return {
        "user_id": row.user_id, "email": row.email, "login": row.login, "first_name": row.first_name,
        "last_name": row.last_name, "level_id": row.term_id, "level_name": row.level_name,
        "expired_on": row.expired_on.isoformat(), "last_access_day": row.last_access_day.isoformat(),
        "days_since": row.days_since, "last_grant": row.last_grant.isoformat() if row.last_grant else None,
        "blocked": row.blocked, "reminders_sent": row.reminders_sent,
    }


# --- the overview ---------------------------------------------------------------------------------

@blueprint.get("/monitor")
@login_required
def overview():
    runtime = _runtime()
    service = _service()
    levels = runtime.reader.levels()
    display = _display(runtime, levels)
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
            "stale": fresh is None or fresh.stale or now - fresh.refreshed_at > STALE_AFTER,
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
    if raw:
        names = {level.term_id: level.name for level in runtime.reader.levels()}
        if not raw.isdigit() or int(raw) not in names:
            flash(Problem("level", "unknown_level", raw[:40]).message(), "error")
            return redirect(url_for(".overview"))
        term_id = int(raw)
        # New or deleted certificates since the last scan must count, as in a full refresh.
        CertificateClassifier(runtime).sync()
        report = refresher.refresh_level(term_id)
        seconds = time.monotonic() - started
        flash(translate("monitor.flash.level", name=names[term_id], seconds=Display.seconds(seconds),
                        count=report.sleepers), "ok")
    else:
        reports = refresher.refresh_all()
        seconds = time.monotonic() - started
        flash(translate("monitor.flash.all", levels=len(reports), seconds=Display.seconds(seconds),
                        count=sum(r.sleepers for r in reports)), "ok")
    log.info("sleepers refreshed by %s (%s) in %.2f s", admin.login if admin else "?", raw or "all levels", seconds)
    return redirect(url_for(".overview"))


# --- the sleepers table ---------------------------------------------------------------------------

def _sort_link(filters: Filters, column: str) -> dict[str, Any]:
    sort = SORTABLE[column]
    active = filters.sort == sort
    descending = (not filters.descending) if active else False
    return {
        "url": filters.url(sort=sort, descending=descending, after=None),
        "active": active,
        "aria": ("descending" if filters.descending else "ascending") if active else None,
        "arrow": ("▼" if filters.descending else "▲") if active else "",
    }


@blueprint.get("/monitor/sleepers")
@login_required
def sleepers():
    runtime = _runtime()
    service = _service()
    levels = runtime.reader.levels()
    display = _display(runtime, levels)
    filters, problems = parse_filters(request.args, known_levels=[lv.term_id for lv in levels])
    try:
        page = service.page(filters.query())
    except ValueError:
        # A cursor from another order or a mangled link: start again from the first page.
        problems.append(Problem("after", "bad_cursor"))
        filters = replace(filters, after=None)
        page = service.page(filters.query())
    freshness = service.freshness()
    shown = filters.levels or tuple(lv.term_id for lv in levels)
    now = runtime.clock.now()
    stale = [display.level(t) for t in shown
             if t not in freshness or freshness[t].stale or now - freshness[t].refreshed_at > STALE_AFTER]
    return render_template(
        "monitor_sleepers.html", page=page, filters=filters, problems=[p.message() for p in problems],
        fmt=display, levels=level_tree(levels), sorts={c: _sort_link(filters, c) for c in SORTABLE},
        stale=stale, evaluated_for=display.today,
        first_url=filters.url(after=None) if filters.after else None,
        next_url=filters.url(after=page.next_cursor) if page.next_cursor else None,
        csv_url=filters.url(".sleepers_csv", after=None, limit=filters.default_limit),
        excel_url=url_for(".sleepers_csv", excel=1, **filters.args(after=None, limit=filters.default_limit)),
        reset_url=url_for(".sleepers"),
    )


@blueprint.get("/monitor/sleepers.csv")
@login_required
def sleepers_csv():
    runtime = _runtime()
    filters, _problems = parse_filters(request.args)  # unusable filters are dropped, as on the page
    excel = (request.args.get("excel") or "").strip().lower() in _TRUE
    rows = _service().iterate(filters.query(paged=False))
    day = runtime.clock.today_utc().isoformat()
    name = f"sleepers-level-{filters.levels[0]}-{day}.csv" if len(filters.levels) == 1 else f"sleepers-{day}.csv"
    response = Response(csv_chunks(rows, excel=excel), mimetype="text/csv")
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
        abort(404, description=translate("monitor.error.no_user", id=user_id))
    display = _display(runtime)
    term_ids = list(dict.fromkeys(row.term_id for row in runtime.reader.key_rows(user_id) if row.term_id))
    sections = []
    for level, _depth in level_tree([lv for lv in runtime.reader.levels() if lv.term_id in term_ids]):
        explanation = service.explain(user_id, level.term_id)
        sections.append({"e": explanation, "sentence": verdict_sentence(explanation),
                         "timeline": key_timeline(explanation.keys, explanation.day)})
    known = {s["e"].term_id for s in sections}
    missing = [t for t in term_ids if t not in known]  # keys of deleted levels
    return render_template("monitor_user.html", user=user, sections=sections, missing=missing, fmt=display,
                           back_url=request.referrer if _same_site(request.referrer) else url_for(".sleepers"))


def _same_site(url: str | None) -> bool:
    # Back to the filtered list the admin came from; anything else (another site, this page) gets the plain list.
    return bool(url) and url.startswith(request.host_url + "monitor/sleepers")  # type: ignore[operator, union-attr]


# --- per-level settings --------------------------------------------------------------------------

# The settings module words its errors in English; the page shows them in the admin's language.
_SETTINGS_ERRORS = {
    "days after expiry cannot be negative": "monitor.settings.error.negative",
    "cannot be negative": "monitor.settings.error.negative",
    "a letter needs a subject": "monitor.settings.error.no_subject",
    "a letter needs a body": "monitor.settings.error.no_body",
    "an administrator address is required for the admin digest": "monitor.settings.error.admin_email_required",
    "not an e-mail address": "monitor.settings.error.bad_email",
}
_LATER_THAN = re.compile(r"^must be later than letter (\d+) \((-?\d+) days\)$")


# Template errors come from sidecar.monitor.settings.template_errors: "template error at line N: reason".
_TEMPLATE_AT_LINE = re.compile(r"^template error at line (\d+): (.*)$", re.S)
_TEMPLATE_ERROR = re.compile(r"^template error: (.*)$", re.S)
# The variables a field may use are listed next to it, so the page leaves out the checker's long list.
_UNKNOWN_VARIABLE = re.compile(r"^unknown variable '([^']+)'(?: \(known: .*\))?$", re.S)


def _template_reason(reason: str) -> str:
    unknown = _UNKNOWN_VARIABLE.match(reason)
    if unknown:
        return translate("monitor.settings.error.unknown_variable", name=unknown.group(1))
    return reason  # Jinja's own wording of a syntax error (English)


def settings_error_text(message: str) -> str:
    if message in _SETTINGS_ERRORS:
        return translate(_SETTINGS_ERRORS[message])
    later = _LATER_THAN.match(message)
    if later:
        return translate("monitor.settings.error.not_later", n=later.group(1), days=later.group(2))
    at_line = _TEMPLATE_AT_LINE.match(message)
    if at_line:
        return translate("monitor.settings.error.template_line", line=at_line.group(1),
                         reason=_template_reason(at_line.group(2)))
    template = _TEMPLATE_ERROR.match(message)
    if template:
        return translate("monitor.settings.error.template", reason=_template_reason(template.group(1)))
    return message  # a rule added later still reaches the admin, if only in English


def _settings_fields(settings: LevelSettings) -> dict[str, Any]:
    """The settings flattened to the form's field names (the same names the validation errors use)."""
    fields: dict[str, Any] = {"enabled": settings.enabled}
    for n, letter in enumerate(settings.letters, start=1):
        fields[f"letters.{n}.days"] = letter.days
        fields[f"letters.{n}.subject"] = letter.subject
        fields[f"letters.{n}.body"] = letter.body
    for name in ("admin_days_after_last", "admin_email", "admin_subject", "admin_body", "renewal_url"):
        fields[name] = getattr(settings, name)
    return fields


def parse_settings_form(term_id: int, form: Mapping[str, str]) -> tuple[LevelSettings, dict[str, str], dict[str, Any]]:
    """Settings from the posted form, the fields that are not numbers, and the raw values to show again."""
    errors: dict[str, str] = {}
    raw: dict[str, Any] = {"enabled": (form.get("enabled") or "").strip().lower() in _TRUE}

    def days(name: str) -> int | None:
        text = (form.get(name) or "").strip()
        raw[name] = text
        if not text:
            return None  # empty = not set, like a key the legacy plugin never saved
        try:
            return int(text)
        except ValueError:
            errors[name] = translate("monitor.settings.error.not_a_number")
            return None

    def text(name: str) -> str:
        raw[name] = form.get(name) or ""
        return raw[name]

    letters = tuple(Letter(days=days(f"letters.{n}.days"), subject=text(f"letters.{n}.subject"),
                           body=text(f"letters.{n}.body")) for n in range(1, LETTERS + 1))
    settings = LevelSettings(term_id=term_id, enabled=raw["enabled"], letters=letters,
                             admin_days_after_last=days("admin_days_after_last"),
                             admin_email=text("admin_email").strip(), admin_subject=text("admin_subject"),
                             admin_body=text("admin_body"), renewal_url=text("renewal_url").strip())
    return settings, errors, raw


def _variables(variables: Mapping[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """A template's variables with their meaning in the page's language."""
    russian = current_language() == "ru"
    return [(name, ru if russian else en) for name, (en, ru) in variables.items()]


def _level_or_404(term_id: int) -> Level:
    level = next((lv for lv in _runtime().reader.levels() if lv.term_id == term_id), None)
    if level is None:
        abort(404, description=translate("monitor.settings.no_level", id=term_id))
    return level


def _render_settings(level: Level, service: MonitorSettings, *, values: dict[str, Any] | None = None,
                     errors: dict[str, str] | None = None, status: int = 200):
    imported, effective = service.imported(level.term_id), service.effective(level.term_id)
    imported_fields, effective_fields = _settings_fields(imported), _settings_fields(effective)
    shown = values if values is not None else effective_fields
    fields = {}
    for name, value in effective_fields.items():
        root = name.split(".", 1)[0]
        # "letters" is stored as one override: only the letter fields that differ count as changed.
        overridden = root in effective.overridden and value != imported_fields[name]
        fields[name] = {"name": name, "value": "" if shown[name] is None else shown[name],
                        "imported": imported_fields[name], "overridden": overridden,
                        "error": (errors or {}).get(name)}
    return render_template("monitor_settings.html", level=level, fields=fields, letters=range(1, LETTERS + 1),
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
        errors = {name: settings_error_text(message) for name, message in exc.errors.items()}
    errors.update(not_numbers)  # "not a number" says more than a rule applied to the blanked value
    if not errors:
        try:
            service.save(settings, actor=actor())
        except SettingsError as exc:
            errors = {name: settings_error_text(message) for name, message in exc.errors.items()}
    if errors:
        return _render_settings(level, service, values=raw, errors=errors, status=422)
    flash(translate("monitor.settings.saved", name=level.name), "ok")
    return redirect(url_for(".level_settings", term_id=term_id))


@blueprint.post("/monitor/levels/<int:term_id>/settings/reset")
@login_required
def reset_level_settings(term_id: int):
    level = _level_or_404(term_id)
    MonitorSettings(_runtime()).reset(term_id, actor=actor())
    flash(translate("monitor.settings.reset_done", name=level.name), "ok")
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
                                      known_levels=known)
    if problems:
        first = problems[0]
        return _api_error(400, "invalid_parameter", first.message("en"), field=first.field,
                          errors=[{"field": p.field, "message": p.message("en")} for p in problems])
    try:
        page = _service().page(filters.query())
    except ValueError as exc:
        return _api_error(400, "invalid_parameter", str(exc), field="after",
                          errors=[{"field": "after", "message": str(exc)}])
    log.debug("sleepers API page for %s", principal)
    body = {
        "ok": True,
        "evaluated_for": runtime.clock.today_utc().isoformat(),
        "total": page.total,
        "limit": filters.limit,
        "sort": filters.sort,
        "desc": filters.descending,
        "next_cursor": page.next_cursor,
        "next_url": filters.url(".api_sleepers", after=page.next_cursor) if page.next_cursor else None,
        "sleepers": [api_record(row) for row in page.rows],
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response
