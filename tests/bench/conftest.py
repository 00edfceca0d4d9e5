"""A controlled clock for the benchmarks: tests check their arithmetic, never real timings."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest


class TickingClock:
    """Stands in for a module's ``time``: each ``perf_counter()`` read is ``tick`` seconds
    after the previous one, so every timed window lasts a known number of ticks."""

    def __init__(self, tick: float = 1.0) -> None:
        self.tick, self.now = tick, 0.0

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


@pytest.fixture
def ticking_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[ModuleType, float], TickingClock]:
    """``install(module, tick)`` replaces ``module.time`` by a :class:`TickingClock`."""

    def install(module: ModuleType, tick: float = 1.0) -> TickingClock:
        clock = TickingClock(tick)
        monkeypatch.setattr(module, "time", clock)
        return clock

    return install
