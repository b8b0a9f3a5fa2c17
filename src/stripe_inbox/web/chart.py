"""Events received per hour over the last day, as the bars of a small inline SVG chart (no script draws it)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..stores import Store

HOURS = 24
BAR_WIDTH, BAR_GAP, HEIGHT = 10, 2, 40


@dataclass(frozen=True, slots=True)
class Bar:
    x: int
    y: float
    height: float
    label: str  # the hour (UTC) and its count, for the bar's tooltip


@dataclass(frozen=True, slots=True)
class HourlyChart:
    bars: list[Bar]
    total: int
    peak: int
    width: int = HOURS * (BAR_WIDTH + BAR_GAP)
    height: int = HEIGHT
    bar_width: int = BAR_WIDTH


def day_start(now: float) -> float:
    """The start of the first hour the chart shows: the current hour is its last bar."""
    return (int(now) // 3600 - HOURS + 1) * 3600


def hourly_chart(per_hour: dict[int, int], now: float) -> HourlyChart:
    """`per_hour`: counts keyed by hours since the epoch (the store's received_per_hour)."""
    last = int(now) // 3600
    hours = range(last - HOURS + 1, last + 1)
    counts = [per_hour.get(hour, 0) for hour in hours]
    peak = max(counts)
    bars = []
    for index, (hour, count) in enumerate(zip(hours, counts, strict=True)):
        # An hour with any event gets at least a sliver, so it is told apart from an empty one.
        height = 0.0 if count == 0 else max(1.5, HEIGHT * count / peak)
        clock = time.strftime("%H:00", time.gmtime(hour * 3600))
        bars.append(Bar(index * (BAR_WIDTH + BAR_GAP), HEIGHT - height, height, f"{clock} UTC: {count}"))
    return HourlyChart(bars, sum(counts), peak)


@dataclass
class ReceivedPerHour:
    """The counts the chart shows, read cheaply: an event's received_at is its first arrival, so an hour that
    has ended keeps its count. Those are read once an hour; each page reads only the last two hours (the one
    before, for an event stored a moment after the hour turned)."""

    store: Store
    _settled: dict[int, int] = field(default_factory=dict)
    _settled_for: int | None = None  # the current hour when _settled was read

    async def counts(self, now: float) -> dict[int, int]:
        current = int(now) // 3600
        if self._settled_for != current:
            self._settled = await self.store.received_per_hour(day_start(now), (current - 1) * 3600)
            self._settled_for = current
        return {**self._settled, **await self.store.received_per_hour((current - 1) * 3600)}
