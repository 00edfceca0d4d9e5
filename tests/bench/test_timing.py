"""The benchmarks' timed windows, on a controlled clock."""

from __future__ import annotations

from collections.abc import Callable

from stnlab.bench.timing import WindowRates, endless, timed_windows


def test_each_window_is_its_samples_over_its_seconds(ticking_clock: Callable) -> None:
    clock = ticking_clock(0.0)  # time passes only inside the steps below
    seconds = iter([9.0, 9.0, 1.0, 4.0, 1.0, 1.0])  # two warm-up steps, then 3 × 2 steps
    samples = iter([100, 100, 8, 8, 4, 4])

    def step() -> int:
        clock.now += next(seconds)
        return next(samples)

    rates = timed_windows(step, warmup=2, windows=2, window_batches=2)
    # window 1: 16 samples in 5 s; window 2: 8 samples in 2 s; the warm-up counts for neither
    assert rates == WindowRates((3.2, 4.0), warmup_seconds=18.0)
    assert (rates.median, rates.low, rates.high) == (3.6, 3.2, 4.0)


def test_endless_restarts_a_loader_that_runs_out() -> None:
    passes = []

    class Loader:
        def __iter__(self):
            passes.append(len(passes))
            return iter([1, 2, 3])

    batches = endless(Loader())
    assert [next(batches) for _ in range(7)] == [1, 2, 3, 1, 2, 3, 1]
    assert passes == [0, 1, 2]
