"""Small bar charts in plain numbers (a template draws them as SVG): one bar per day and series,
a scale rounded up to a readable maximum. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

WIDTH = 560
HEIGHT = 160
LEFT = 34  # room for the scale's numbers
BOTTOM = 20  # room for the day labels
TOP = 8


@dataclass
class Bar:
    day: date
    series: str
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass
class Chart:
    title: str
    series: list[str]
    days: list[date]
    bars: list[Bar]
    maximum: int  # the scale's top
    total: dict[str, int]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    bottom: int = BOTTOM

    @property
    def base(self) -> int:
        """The y of the zero line."""
        return self.height - self.bottom

    @property
    def labelled_days(self) -> list[tuple[date, float]]:
        """About five evenly spaced days to label (the last, today, always), with the x of their middle."""
        step = max(1, len(self.days) // 5)
        slot = (self.width - self.left) / max(len(self.days), 1)
        last = len(self.days) - 1
        return [(d, self.left + (i + 0.5) * slot) for i, d in enumerate(self.days) if (last - i) % step == 0]


def last_days(today: date, count: int) -> list[date]:
    """The `count` days ending with `today`, oldest first."""
    return [today - timedelta(days=count - 1 - i) for i in range(count)]


def nice_maximum(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, … that is at least `value` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def bar_chart(title: str, days: list[date], series: dict[str, dict[date, int]]) -> Chart:
    """Bars side by side per day, one per series, scaled to the largest value."""
    names = list(series)
    values = [series[n].get(d, 0) for d in days for n in names]
    top = nice_maximum(max(values, default=0))
    slot = (WIDTH - LEFT) / max(len(days), 1)
    bar_w = max(1.0, (slot - 2) / max(len(names), 1))
    span = HEIGHT - BOTTOM - TOP
    bars = []
    for i, d in enumerate(days):
        for j, name in enumerate(names):
            value = series[name].get(d, 0)
            h = span * value / top
            x = LEFT + i * slot + 1 + j * bar_w
            bars.append(
                Bar(d, name, value, round(x, 1), round(HEIGHT - BOTTOM - h, 1), round(bar_w, 1), round(h, 1))
            )
    totals = {n: sum(series[n].get(d, 0) for d in days) for n in names}
    return Chart(title, names, days, bars, top, totals)


def busiest(series: dict[str, dict[date, int]], count: int) -> tuple[dict[str, dict[date, int]], int, int]:
    """The `count` series with the largest totals (ties by name), and how many series and how much
    in total were left out."""
    totals = {name: sum(values.values()) for name, values in series.items()}
    ranked = sorted(series, key=lambda name: (-totals[name], name))
    kept, rest = ranked[:count], ranked[count:]
    return {name: series[name] for name in kept}, len(rest), sum(totals[name] for name in rest)
