"""Server-drawn charts: axes with tick labels, a caption, a <title> with the numbers on every point or bar,
classes instead of inline styles, and a plain sentence when there is nothing to draw."""

from datetime import date, timedelta

from sidecar.web.svg_charts import line_chart, nice_ticks, stacked_bar_chart

D = date(2026, 11, 1)


def test_ticks_are_round_and_reach_the_top():
    assert nice_ticks(0) == [0, 1]
    assert nice_ticks(7) == [0, 2, 4, 6, 8]
    assert nice_ticks(40) == [0, 10, 20, 30, 40]
    assert nice_ticks(1234)[-1] >= 1234


def test_a_line_chart_has_axes_labels_a_caption_and_numbers_on_each_point():
    svg = str(line_chart([(D, 5), (D + timedelta(days=3), 12)], D, D + timedelta(days=6), caption="Sleepers per day",
                         label="Trend", point_title="{day}: {value} sleepers"))
    assert svg.count('class="chart-axis"') == 2 and '<polyline class="chart-line"' in svg
    assert "<title>2026-11-04: 12 sleepers</title>" in svg and "<title>2026-11-01: 5 sleepers</title>" in svg
    assert ">2026-11-07</text>" in svg and ">15</text>" in svg
    assert "<figcaption>Sleepers per day</figcaption>" in svg and "style=" not in svg


def test_a_stacked_bar_chart_has_one_titled_bar_per_day_and_series_and_a_legend():
    days = [D, D + timedelta(days=1)]
    svg = str(stacked_bar_chart(days, ("ok", "bad"), {(D, "ok"): 3, (D, "bad"): 1, (days[1], "ok"): 2},
                                names={"ok": "succeeded", "bad": "failed <b>"}, caption="Grants", label="Grants"))
    assert svg.count("<rect ") == 3 and 'class="chart-bar chart-series-bad"' in svg
    assert "<title>2026-11-01: succeeded 3</title>" in svg
    assert "failed &lt;b&gt;" in svg and "style=" not in svg


def test_nothing_to_draw_says_so():
    assert "No data" in str(line_chart([], D, D, caption="c", label="l", empty="No data"))
    assert "No data" in str(stacked_bar_chart([D], ("ok",), {}, names={"ok": "ok"}, caption="c", label="l",
                                              empty="No data"))
