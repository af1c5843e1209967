"""Small SVG charts of the monitor pages (drawn on the server: no script, no library in the browser):
the 12-week sleepers trend and a learner's key timeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from markupsafe import Markup, escape

from sidecar.monitor.service import KeyFact
from sidecar.web.i18n import translate

TREND_WEEKS = 12


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


