"""The trends charts' arithmetic: readable scales, one bar per day and series, days in order."""

from __future__ import annotations

from datetime import date

from vibe_ensemble.domain.charts import (
    BOTTOM,
    HEIGHT,
    TOP,
    WIDTH,
    bar_chart,
    busiest,
    last_days,
    nice_maximum,
)


def test_the_scale_is_rounded_up_to_a_readable_number() -> None:
    assert [nice_maximum(v) for v in (0, 1, 2, 3, 6, 10, 11, 49, 51, 999, 1001)] == [
        1, 1, 2, 5, 10, 10, 20, 50, 100, 1000, 2000,
    ]  # fmt: skip


def test_bars_per_day_and_series_scaled_to_the_largest() -> None:
    days = last_days(date(2026, 3, 2), 3)
    assert days == [date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 2)]
    chart = bar_chart("t", days, {"opened": {days[0]: 5, days[2]: 2}, "finished": {days[2]: 4}})
    assert chart.maximum == 5 and chart.total == {"opened": 7, "finished": 4}
    assert [(b.day, b.series, b.value) for b in chart.bars] == [
        (days[0], "opened", 5), (days[0], "finished", 0),
        (days[1], "opened", 0), (days[1], "finished", 0),
        (days[2], "opened", 2), (days[2], "finished", 4),
    ]  # fmt: skip
    tallest = chart.bars[0]
    assert tallest.height == HEIGHT - BOTTOM - TOP and tallest.y == TOP
    assert chart.bars[1].height == 0 and chart.bars[1].y == HEIGHT - BOTTOM
    assert all(b.x + b.width <= WIDTH for b in chart.bars)
    assert [b.x for b in chart.bars] == sorted(b.x for b in chart.bars)  # left to right
    assert all(a.x + a.width <= b.x + 0.2 for a, b in zip(chart.bars, chart.bars[1:], strict=False))
    assert [d for d, _ in chart.labelled_days] == days
    fortnight = bar_chart("t", last_days(date(2026, 3, 14), 14), {"n": {}})
    assert [d.day for d, _ in fortnight.labelled_days] == [2, 4, 6, 8, 10, 12, 14]  # today labelled
    empty = bar_chart("t", days, {"messages": {}})
    assert empty.maximum == 1 and all(b.height == 0 for b in empty.bars)


def test_busiest_keeps_the_largest_totals_ties_by_name_and_counts_the_rest() -> None:
    d1, d2 = date(2026, 3, 1), date(2026, 3, 2)
    series = {"cyd": {d1: 2}, "ada": {d1: 1, d2: 1}, "brook": {d2: 2}, "zed": {d1: 1}}
    kept, others, rest = busiest(series, 2)
    assert list(kept) == ["ada", "brook"] and kept["ada"] == {d1: 1, d2: 1}  # 2 each; cyd's 2 loses by name
    assert (others, rest) == (2, 3)
    assert busiest(series, 10)[1:] == (0, 0)
    assert busiest({}, 5) == ({}, 0, 0)
