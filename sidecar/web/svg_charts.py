"""Charts drawn on the server as inline SVG: no script and no library in the browser, styled by app.css
classes (the CSP forbids inline styles). Every point or bar carries a ``<title>`` with its numbers, which
browsers show on hover; the caption says what the chart counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28


def nice_ticks(top: int, count: int = 4) -> list[int]:
    """Round tick values from 0 to at least ``top`` (``count`` steps or fewer)."""
    if top <= 0:
        return [0, 1]
    raw = top / count
    magnitude = 10 ** (len(str(int(raw))) - 1)
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    ticks = list(range(0, top + step, step))
    return ticks if ticks[-1] >= top else [*ticks, ticks[-1] + step]


@dataclass(frozen=True)
class _Frame:
    days: int          # span of the x axis in days (at least 1)
    start: date
    top: int           # value of the highest tick

    def x(self, day: date) -> float:
        return round(LEFT + (WIDTH - LEFT - RIGHT) * (day - self.start).days / self.days, 1)

    def y(self, value: float) -> float:
        return round(HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * value / self.top, 1)


def _axes(frame: _Frame, ticks: list[int], end: date) -> list[str]:
    parts = [f'<line class="chart-axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}"/>',
             f'<line class="chart-axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>']
    for tick in ticks:
        y = frame.y(tick)
        parts.append(f'<line class="chart-grid" x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}"/>'
                     f'<text class="chart-tick chart-tick-y" x="{LEFT - 6}" y="{y + 4}">{tick}</text>')
    middle = frame.start.fromordinal((frame.start.toordinal() + end.toordinal()) // 2)
    # The first label starts at the axis and the last ends at the right edge, so neither is cut off.
    for day, side in {frame.start: "first", middle: "middle", end: "last"}.items():
        parts.append(f'<text class="chart-tick chart-tick-x chart-tick-{side}" x="{frame.x(day)}" '
                     f'y="{HEIGHT - 8}">{day.isoformat()}</text>')
    return parts


def _figure(parts: list[str], caption: str, label: str, css: str) -> Markup:
    svg = (f'<svg class="chart {css}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}">'
           f'<title>{escape(label)}</title>{"".join(parts)}</svg>')
    return Markup(f'<figure class="chart-figure">{svg}<figcaption>{escape(caption)}</figcaption></figure>')  # noqa: S704


def line_chart(points: Sequence[tuple[date, int]], start: date, end: date, *, caption: str, label: str,
               point_title: str = "{day}: {value}", empty: str = "—") -> Markup:
    """Values per day between ``start`` and ``end`` on a real time axis (a gap shows as a straight
    segment); ``point_title`` is formatted with ``day`` and ``value`` for each point's tooltip."""
    if not points:
        return Markup(f'<p class="muted chart-empty">{escape(empty)}</p>')  # noqa: S704
    ticks = nice_ticks(max(v for _d, v in points))
    frame = _Frame(max((end - start).days, 1), start, ticks[-1])
    parts = _axes(frame, ticks, end)
    coords = " ".join(f"{frame.x(d)},{frame.y(v)}" for d, v in points)
    parts.append(f'<polyline class="chart-line" points="{coords}"/>')
    for day, value in points:
        title = escape(point_title.format(day=day.isoformat(), value=value))
        parts.append(f'<circle class="chart-dot" cx="{frame.x(day)}" cy="{frame.y(value)}" r="3"><title>{title}</title></circle>')
    return _figure(parts, caption, label, "chart-line-chart")


def stacked_bar_chart(days: Sequence[date], series: Sequence[str], values: Mapping[tuple[date, str], int], *,
                      names: Mapping[str, str], caption: str, label: str, bar_title: str = "{day}: {name} {value}",
                      empty: str = "—") -> Markup:
    """One bar per day, stacked by series (each a ``chart-series-<name>`` class); a legend names them."""
    totals = {day: sum(values.get((day, s), 0) for s in series) for day in days}
    if not days or not any(totals.values()):
        return Markup(f'<p class="muted chart-empty">{escape(empty)}</p>')  # noqa: S704
    ticks = nice_ticks(max(totals.values()))
    start, end = days[0], days[-1]
    frame = _Frame(max(len(days), 1), start, ticks[-1])
    parts = _axes(frame, ticks, end)
    slot = (WIDTH - LEFT - RIGHT) / max(len(days), 1)
    width = round(max(slot * 0.7, 1), 1)
    for day in days:
        x, base = round(frame.x(day) + (slot - width) / 2, 1), 0
        for name in series:
            value = values.get((day, name), 0)
            if not value:
                continue
            top, bottom = frame.y(base + value), frame.y(base)
            title = escape(bar_title.format(day=day.isoformat(), name=names[name], value=value))
            parts.append(f'<rect class="chart-bar chart-series-{name}" x="{x}" y="{top}" width="{width}" '
                         f'height="{round(bottom - top, 1)}"><title>{title}</title></rect>')
            base += value
    legend = "".join(f'<span class="legend-item"><span class="legend-swatch chart-series-{s}"></span>'
                     f'{escape(names[s])}</span>' for s in series)
    return _figure(parts, caption, label, "chart-bar-chart") + Markup(f'<p class="chart-legend">{legend}</p>')  # noqa: S704
