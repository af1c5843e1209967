"""Small SVG charts of the monitor pages (drawn on the server: no script, no library in the browser):
the 12-week sleepers trend with its axes and per-day counts, and a learner's key timeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from markupsafe import Markup, escape

from sidecar.monitor.service import KeyFact, TrendPoint
from sidecar.web.i18n import gettext, pgettext

TREND_WEEKS = 12


def _point_title(day: date, count: int, reconstructed: bool) -> str:
    if reconstructed:
        return gettext("{day}: {count} (reconstructed from key dates)", day=day.isoformat(), count=count)
    return gettext("{day}: {count}", day=day.isoformat(), count=count)


def sparkline(points: Sequence[tuple[date, int] | TrendPoint], today: date, weeks: int = TREND_WEEKS,
              width: int = 260, height: int = 64) -> Markup:
    """An inline SVG of daily sleeper counts over the last ``weeks`` weeks, drawn on the server.

    Days are placed on a real time axis, so a gap between refreshes shows as a straight segment
    rather than being squeezed away. The y axis is labelled with 0 and the highest count, the x axis
    with the window's first day and today; each day's count is in a ``<title>`` (shown on hover).
    Days reconstructed from key dates are drawn dashed. Styling lives in app.css (the CSP forbids
    inline styles).
    """
    if not points:
        return Markup('<span class="muted">—</span>')
    marked = [TrendPoint(p[0], p[1], bool(p[2]) if len(p) > 2 else False) for p in points]  # type: ignore[misc]
    start = today - timedelta(weeks=weeks)
    span = max((today - start).days, 1)
    top = max(p.sleepers for p in marked) or 1
    left, right, upper, lower = 30.0, 4.0, 6.0, 14.0
    plot_w, plot_h = width - left - right, height - upper - lower
    base = height - lower
    step = plot_w / span

    def x_of(day: date) -> float:
        return round(left + plot_w * min(max((day - start).days, 0), span) / span, 1)

    def y_of(count: int) -> float:
        return round(base - plot_h * count / top, 1)

    last = marked[-1]
    label = gettext("Sleepers over {weeks} weeks: from {low} to {high}; {last} on "
                    "{day}", weeks=weeks, low=min(p.sleepers for p in marked), high=top,
                      last=last.sleepers, day=last.day.isoformat())
    parts = [f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>',
             f'<line class="spark-axis" x1="{left}" y1="{upper}" x2="{left}" y2="{base}"/>',
             f'<line class="spark-base" x1="{left}" y1="{base}" x2="{width - right}" y2="{base}"/>',
             f'<text class="spark-tick spark-y" x="{left - 3}" y="{upper + 7}">{top}</text>',
             f'<text class="spark-tick spark-y" x="{left - 3}" y="{base}">0</text>',
             f'<text class="spark-tick" x="{left}" y="{height - 2}">{(start + timedelta(days=1)).isoformat()}</text>',
             f'<text class="spark-tick end" x="{width - right}" y="{height - 2}">{today.isoformat()}</text>']
    rebuilt = [p for p in marked if p.reconstructed]
    counted = [p for p in marked if not p.reconstructed]
    if rebuilt and counted and rebuilt[-1].day < counted[0].day:
        counted = [rebuilt[-1], *counted]   # the solid line starts where the dashed one ends
    for line, css in ((rebuilt, "spark-line spark-rebuilt"), (counted, "spark-line")):
        if len(line) > 1:
            coords = " ".join(f"{x_of(p.day)},{y_of(p.sleepers)}" for p in line)
            parts.append(f'<polyline class="{css}" points="{coords}"/>')
    for p in marked:
        hit_x = round(max(x_of(p.day) - step / 2, left), 1)
        parts.append(f'<rect class="spark-hit" x="{hit_x}" y="{upper}" width="{round(max(step, 2.0), 1)}" '
                     f'height="{plot_h}"><title>{escape(_point_title(p.day, p.sleepers, p.reconstructed))}</title></rect>')
    parts.append(f'<circle class="spark-dot" cx="{x_of(last.day)}" cy="{y_of(last.sleepers)}" r="2.5"/></svg>')
    return Markup("".join(parts))  # noqa: S704 - numbers, dates and escaped labels only


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

    label = gettext("Key periods on a time line; the vertical line is the evaluation day")  # not in the f-string: pybabel reads no f-string
    parts = [f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(label)}">']
    for i, key in enumerate(drawn):
        top = gutter + i * (bar + 4)
        start = x(key.date_start)  # type: ignore[arg-type]
        end = width - gutter if key.unlimited or key.date_end is None else x(key.date_end)
        kind = ("banned" if key.banned else "unlimited" if key.unlimited else "basket" if key.basket
                else "ignored" if not key.counts else "active" if key.active_on_day else "past")
        tip = gettext("Key {id}: {start} — {end}", id=key.key_id, start=key.date_start.isoformat(),  # type: ignore[union-attr]
                        end=key.date_end.isoformat() if key.date_end and not key.unlimited
                        else pgettext("monitor.key", "unlimited"))
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


