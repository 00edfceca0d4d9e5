"""Progress bars for long work: drawn on a terminal, silent in log files.

The one owner of progress reporting (downloads, rendering fixed test sets, eval over
variants, robustness over models and values, the report's runs). A bar is drawn with rich
on stderr, and only when stderr is a terminal (rich's test: ``FORCE_COLOR`` and, from rich
14, ``TTY_COMPATIBLE``, then ``isatty``): redirected to a file, piped, or under a job
scheduler nothing is written at all. ``STNLAB_PROGRESS=0`` turns every bar off, Lightning's
training bar included (:func:`on_terminal` decides ``trainer.enable_progress_bar``).

Bars nest: a bar opened while another is shown becomes a line below it and disappears
when done (an eval's variants, and inside each, the rendering of its test set). While a
bar is shown, log records of handlers writing to stderr are printed above it, so neither
garbles the other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

ENV = "STNLAB_PROGRESS"
"""``STNLAB_PROGRESS=0`` turns every progress bar off, on a terminal too."""

T = TypeVar("T")

_shown: Progress | None = None  # the display on screen now; nested bars join it


def on_terminal(stream: str = "stderr") -> bool:
    """Whether a bar on ``stream`` (``"stderr"`` or ``"stdout"``) would be drawn: the
    stream is a terminal (as rich sees it) and ``STNLAB_PROGRESS`` is not ``0``."""
    if stream not in ("stderr", "stdout"):
        raise ValueError(f"stream must be 'stderr' or 'stdout', got {stream!r}")
    if os.environ.get(ENV, "").strip() == "0":
        return False
    console = Console(stderr=stream == "stderr")
    return console.is_terminal and not console.is_dumb_terminal


class _CountColumn(ProgressColumn):
    """``3/7`` for counts, ``1.2/170.5 MB`` for tasks counted in bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._count, self._bytes = MofNCompleteColumn(), DownloadColumn()

    def render(self, task: Task) -> Text:
        column = self._bytes if task.fields.get("unit") == "bytes" else self._count
        return column.render(task)  # type: ignore[return-value]


class ProgressBar:
    """One bar: :meth:`advance` it as work gets done; ``total`` and ``completed`` say where
    it stands (kept whether or not the bar is drawn)."""

    def __init__(self, progress: Progress, task_id: TaskID) -> None:
        self._progress, self._task_id = progress, task_id
        self._task = next(task for task in progress.tasks if task.id == task_id)

    def advance(self, amount: float = 1) -> None:
        """Count ``amount`` more units (items, or bytes) as done."""
        self._progress.advance(self._task_id, amount)

    @property
    def total(self) -> float | None:
        """The number of units expected (``None``: unknown)."""
        return self._task.total

    @property
    def completed(self) -> float:
        """The number of units done so far."""
        return self._task.completed


def _stderr_log_handlers(stream: object) -> list[logging.StreamHandler]:
    """Logging handlers (not files) that write to ``stream``: the root's, Lightning's, …"""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [
        handler
        for logger in loggers
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and handler.stream is stream
    ]


@contextlib.contextmanager
def _logs_above(progress: Progress, real_stderr: object) -> Iterator[None]:
    """Point stderr log handlers at rich's stand-in for stderr while ``progress`` is shown,
    so their lines are printed above the bar instead of through it."""
    handlers = _stderr_log_handlers(real_stderr) if sys.stderr is not real_stderr else []
    for handler in handlers:
        handler.setStream(sys.stderr)  # type: ignore[arg-type]
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(real_stderr)  # type: ignore[arg-type]


@contextlib.contextmanager
def progress_bar(
    description: str, total: float | None, *, unit: str = "", enabled: bool = True
) -> Iterator[ProgressBar]:
    """A bar for ``total`` units of work (``unit="bytes"`` shows sizes) named
    ``description``; drawn only on a terminal and when ``enabled`` (e.g. rank 0 only).

    >>> with progress_bar("counting", total=3) as bar:
    ...     for _ in range(3):
    ...         bar.advance()
    >>> bar.completed, bar.total
    (3, 3)
    """
    global _shown
    if _shown is not None:  # inside another bar: one more line of that display
        outer = _shown
        task_id = outer.add_task(description, total=total, unit=unit)
        try:
            yield ProgressBar(outer, task_id)
        finally:
            outer.remove_task(task_id)
        return
    show = enabled and on_terminal("stderr")
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        _CountColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show,
    )
    task_id = progress.add_task(description, total=total, unit=unit)
    if not show:
        yield ProgressBar(progress, task_id)
        return
    real_stderr = sys.stderr
    with progress:
        _shown = progress
        try:
            with _logs_above(progress, real_stderr):
                yield ProgressBar(progress, task_id)
        finally:
            _shown = None


def track(
    items: Iterable[T], description: str, *, total: int | None = None, enabled: bool = True
) -> Iterator[T]:
    """``items`` one by one, with a bar that advances after each (``total``: the number of
    items, when ``items`` has no ``len``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()
