"""The run folder's guards: one process per folder, no stale temporary files, SIGTERM.

* :class:`RunFolderLock` makes a run (and each sweep job) hold its folder: a second process
  started on the same folder is refused, naming the PID that holds it; a lock left by a
  dead process is taken over with a warning.
* stale ``.<name>.tmp-<pid>`` / ``.<name>.part-<pid>`` files that a killed process left
  behind are removed by :func:`stnlab.temp_files.remove_stale_temp_files`.
* :func:`sigterm_raises` turns SIGTERM (what SLURM and most schedulers send before they
  kill a job) into :class:`~stnlab.errors.TerminatedError`, so the run ends with exit
  status 143, a message naming the last good checkpoint and a ``failure.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from stnlab.checks import check_writable
from stnlab.errors import RunFolderBusyError, TerminatedError
from stnlab.temp_files import pid_alive

log = logging.getLogger(__name__)

LOCK_NAME = ".stnlab.lock"


class RunFolderLock:
    """Hold ``<folder>/.stnlab.lock`` (this PID) for the life of a run.

    The lock file is created with ``O_EXCL``, so two processes cannot both take it. A lock
    whose PID is gone (a killed run) is taken over with a warning; one whose PID is alive
    raises :class:`~stnlab.errors.RunFolderBusyError`.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def _holder(self) -> int | None:
        try:
            return int(json.loads(self.path.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def acquire(self) -> None:
        check_writable(self.folder, "paths.output_dir")
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._holder()
                if pid is not None and pid != os.getpid() and pid_alive(pid):
                    raise RunFolderBusyError(
                        f"run folder {self.folder} is in use by process {pid} (its lock file: "
                        f"{self.path}); wait for it, stop it, or give this run another folder "
                        "(hydra.run.dir=…, or hydra.sweep.dir=… for -m)"
                    ) from None
                log.warning(
                    "taking over the run folder %s: its lock was left by process %s, which "
                    "is no longer running",
                    self.folder,
                    pid,
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid()}, f)
            self.held = True
            return
        raise RunFolderBusyError(f"run folder {self.folder}: could not take its lock {self.path}")

    def release(self) -> None:
        if self.held and self._holder() == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise TerminatedError(f"received {signal.Signals(signum).name}")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside: SIGTERM raises :class:`~stnlab.errors.TerminatedError` (main thread only).

    Lightning's own SIGTERM handler (which stops DDP workers) keeps running first: it
    chains the handler it finds, this one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
