"""A controlled clock for the benchmarks: tests check their arithmetic, never real timings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stnlab.bench import timing


class TickingClock:
    """Stands in for ``time`` in :mod:`stnlab.bench.timing`, the benchmarks' one clock: each
    ``perf_counter()`` read is ``tick`` seconds after the previous one, so every timed
    window lasts a known number of ticks."""

    def __init__(self, tick: float = 1.0) -> None:
        self.tick, self.now = tick, 0.0

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


@pytest.fixture
def ticking_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], TickingClock]:
    """``install(tick)`` gives every benchmark a :class:`TickingClock` for this test."""

    def install(tick: float = 1.0) -> TickingClock:
        clock = TickingClock(tick)
        monkeypatch.setattr(timing, "time", clock)
        return clock

    return install
