"""Timing for every benchmark: one clock, timed windows of steps, and their rates.

The benchmarks read time only through :func:`now`, so a test can swap this module's
``time`` for a controlled clock (``tests/bench/conftest.py``) and check the arithmetic;
measured numbers never feed a test's assertion.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")
CPU = torch.device("cpu")


def now() -> float:
    """Seconds on the benchmarks' clock (``time.perf_counter``)."""
    return time.perf_counter()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timestamp means what it says (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class WindowRates:
    """Samples per second of each timed window; ``warmup_seconds`` is the warm-up before
    them (with any compile time), where it was timed.

    >>> rates = WindowRates((40.0, 10.0, 20.0))
    >>> rates.median, rates.low, rates.high
    (20.0, 10.0, 40.0)
    """

    rates: tuple[float, ...]
    warmup_seconds: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def low(self) -> float:
        return min(self.rates)

    @property
    def high(self) -> float:
        return max(self.rates)


def timed_windows(
    step: Callable[[], int],
    warmup: int,
    windows: int,
    window_batches: int,
    device: torch.device = CPU,
) -> WindowRates:
    """Run ``step`` ``warmup`` times, then ``windows`` windows of ``window_batches`` steps.

    ``step`` does one batch of work and returns how many samples it processed; each
    window's rate is its samples over its seconds. On a GPU the queue is drained at the
    end of the warm-up and of every window only, so work stays queued between steps.
    """
    start = now()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_seconds = now() - start
    rates = []
    for _ in range(windows):
        start, count = now(), 0
        for _ in range(window_batches):
            count += step()
        synchronize(device)
        rates.append(count / (now() - start))
    return WindowRates(tuple(rates), warmup_seconds)


def endless(batches: Iterable[T]) -> Iterator[T]:
    """``batches`` pass after pass, for as many timed steps as asked (a loader restarts).

    >>> from itertools import islice
    >>> list(islice(endless([1, 2]), 5))
    [1, 2, 1, 2, 1]
    """
    while True:
        yield from batches
