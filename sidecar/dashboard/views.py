"""The dashboard page (``/``, the page after signing in): parameters in, figures from
:mod:`sidecar.dashboard.service`, charts from :mod:`sidecar.web.svg_charts`.

Parameters: ``window`` (7, 14 or 30 days after a letter; default 14) and ``level`` (a level id; absent:
every level). An unusable one is named on the page, which then answers 400 with the defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta

from flask import Blueprint, render_template, request, url_for
from markupsafe import Markup

from sidecar.dashboard import queries, service
from sidecar.domain.letter_outcomes import DEFAULT_WINDOW, WINDOW_CHOICES
from sidecar.memberlux.reader import Level
from sidecar.web import current_runtime
from sidecar.web.auth import login_required
from sidecar.web.i18n import gettext, pgettext
from sidecar.web.svg_charts import line_chart, stacked_bar_chart

blueprint = Blueprint("dashboard", __name__)

# ASCII digits only (str.isdigit also takes "²" and "①") and short enough for a BIGINT.
_ID = re.compile(r"[0-9]{1,18}")


def parse_params(args: Mapping[str, str], levels: list[Level]) -> tuple[int, Level | None, list[str]]:
    """``(window, level, problems)``: an unusable value is replaced by its default and named."""
    problems: list[str] = []
    window = DEFAULT_WINDOW
    raw_window = (args.get("window") or "").strip()
    if raw_window:
        if _ID.fullmatch(raw_window) and int(raw_window) in WINDOW_CHOICES:
            window = int(raw_window)
        else:
            problems.append(gettext("Outcome window {value}: choose one of {choices} days; showing 14.", value=raw_window[:20],
                                      choices=", ".join(map(str, WINDOW_CHOICES))))
    level = None
    raw_level = (args.get("level") or "").strip()
    if raw_level:
        by_id = {lv.term_id: lv for lv in levels}
        if not _ID.fullmatch(raw_level):
            problems.append(gettext("Level {value}: not a level id; showing all levels.", value=raw_level[:20]))
        elif int(raw_level) not in by_id:
            problems.append(gettext("There is no level {value} on the site; showing all levels.", value=raw_level))
        else:
            level = by_id[int(raw_level)]
    return window, level, problems


def outcome_names() -> dict[str, str]:
    return {"succeeded": pgettext("dashboard.outcome", "succeeded"), "failed": pgettext("grants.status.failed", "failed"),
            "open": pgettext("dashboard.outcome", "in progress"), "other": gettext("other")}


def channel_name(channel: str) -> str:
    names = {"legacy": gettext("legacy bridge"), "api": gettext("API call"),
             "amocrm": gettext("amoCRM webhook"), "program": gettext("program")}
    return names.get(channel, channel)


def _charts(board: service.Dashboard) -> tuple[Markup, Markup]:
    trend = line_chart(board.trend, board.trend_since, board.today,
                       caption=gettext("Sleepers per day over the last {days} days, from the counts recorded by the refreshes (days "
                                       "without a refresh have no point).", days=service.TREND_DAYS),
                       label=gettext("Sleepers per day"),
                       point_title=gettext("{day}: {value} sleepers"), empty=gettext("No refresh has recorded a count in this period yet."))
    days = [board.grants_since + timedelta(days=i) for i in range((board.today - board.grants_since).days + 1)]
    per_day: dict = {}
    for g in board.grants:
        per_day[(g.day, g.outcome)] = per_day.get((g.day, g.outcome), 0) + g.grants
    grants = stacked_bar_chart(days, queries.OUTCOMES, per_day, names=outcome_names(),
                               caption=gettext("Grants received per day over the last {days} days (UTC day of the request), stacked by "
                                               "outcome.", days=service.GRANT_DAYS),
                               label=gettext("Grants per day by outcome"),
                               bar_title=gettext("{day}: {name} — {value}"), empty=gettext("No grant was received in this period."))
    return trend, grants


def grants_by_channel(board: service.Dashboard) -> list[tuple[str, dict[str, int], int]]:
    """``(channel name, grants per outcome, total)`` over the chart's days, busiest channel first."""
    table: dict[str, dict[str, int]] = {}
    for g in board.grants:
        row = table.setdefault(g.channel, {})
        row[g.outcome] = row.get(g.outcome, 0) + g.grants
    return sorted(((channel_name(c), row, sum(row.values())) for c, row in table.items()), key=lambda r: (-r[2], r[0]))


@blueprint.get("/")
@login_required
def index():
    runtime = current_runtime()
    levels = runtime.reader.levels()
    window, level, problems = parse_params(request.args, levels)
    board = service.build(runtime, window, level)
    trend, grants = _charts(board)
    windows = [(n, url_for(".index", window=n, **({"level": level.term_id} if level else {}))) for n in WINDOW_CHOICES]
    page = render_template("dashboard.html", board=board, levels=levels, problems=problems, trend_chart=trend,
                           grants_chart=grants, outcomes=queries.OUTCOMES, outcome_names=outcome_names(),
                           channels=grants_by_channel(board), windows=windows, alerts=board.alerts,
                           interval_minutes=runtime.settings.schedule.dashboard_interval_minutes)
    return page, 400 if problems else 200
