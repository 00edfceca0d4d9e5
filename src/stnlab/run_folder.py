"""The run folder's guards: one process per folder, taken before anything is written.

* :class:`RunFolderLock` makes a run (and each sweep job) hold its folder with a kernel
  lock (``filelock``) on ``<folder>/.stnlab.lock``, which dies with the process, on this
  host or another one sharing the file system. A second process started on the same folder
  is refused in one line.
* :class:`RunFolderClaim` (a Hydra callback) takes that lock before Hydra writes
  ``.hydra/`` and the log into the folder, so a refused process leaves the held folder
  exactly as it found it; a run whose folder name came from the clock gets a folder of its
  own (``…_1``) when another run started in the same second.
* stale ``.<name>.tmp-<pid>`` / ``.<name>.part-<pid>`` files that a killed process left
  behind are removed by :func:`stnlab.temp_files.remove_stale_temp_files`.
* :func:`sigterm_raises` turns SIGTERM (what SLURM and most schedulers send before they
  kill a job) into :class:`~stnlab.errors.TerminatedError`, so the run ends with exit
  status 143, a message naming the last good checkpoint and a ``failure.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from stnlab.checks import check_writable
from stnlab.errors import RunFolderBusyError, StnlabError, TerminatedError

log = logging.getLogger(__name__)

LOCK_NAME = ".stnlab.lock"
_FOLDER_FIX = "wait for it, stop it, or give this run another folder"

# The locks this process holds, by lock file: a folder claimed at start-up
# (:class:`RunFolderClaim`) is the one the task then holds, not a second lock on it.
_HELD: dict[Path, FileLock] = {}


class RunFolderLock:
    """Hold ``<folder>/.stnlab.lock`` for the life of a run (reentrant in one process).

    A folder another live process holds raises
    :class:`~stnlab.errors.RunFolderBusyError`; a lock file a killed process left behind
    holds nothing (the kernel lock went with it) and is simply taken.
    """

    def __init__(self, folder: str | os.PathLike, key: str = "paths.output_dir") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.key = key
        self.held = False

    def acquire(self) -> None:
        key = self.path.resolve()
        if key in _HELD:  # claimed by this process already
            self.held = True
            return
        check_writable(self.folder, self.key)
        lock = FileLock(self.path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunFolderBusyError(
                f"run folder {self.folder} is in use by another running process (it holds "
                f"{self.path}); {_FOLDER_FIX} ({self.key}=…, or hydra.sweep.dir=… for -m)"
            ) from None
        _HELD[key] = lock
        self.held = True

    def release(self) -> None:
        lock = _HELD.pop(self.path.resolve(), None) if self.held else None
        if lock is not None:
            self.path.unlink(missing_ok=True)  # no one waits on it: takers never block
            lock.release()
        self.held = False

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _launch_rank() -> int:
    """This process's rank as the launcher set it in the environment (the variables
    Lightning reads, in its order); 0 for a single process."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def _fresh_folder(folder: Path) -> Path:
    """``folder`` itself when it does not exist yet, else the first free ``folder_<n>``;
    created here (``mkdir`` without ``exist_ok``), so two runs never get the same one."""
    for n in range(1000):
        candidate = folder if n == 0 else folder.with_name(f"{folder.name}_{n}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return candidate
    raise RunFolderBusyError(f"no free run folder next to {folder}: {_FOLDER_FIX}")


class RunFolderClaim(Callback):
    """Hydra callback: check and hold the run (or sweep) folder before Hydra writes in it.

    A folder the user named (``hydra.run.dir=…``) and a sweep's folder are locked or
    refused in one line; a run folder named by the clock is a new one (``…_1``, ``…_2``
    when runs start in the same second). Only the first process of a run claims (DDP's
    other ranks share its folder).
    """

    def __init__(self) -> None:
        self.sweep_lock: RunFolderLock | None = None

    @staticmethod
    def _chosen(config: DictConfig, key: str) -> bool:
        return any(o.split("=", 1)[0].lstrip("+~") == key for o in config.hydra.overrides.hydra)

    def _claim(self, config: DictConfig, key: str) -> RunFolderLock | None:
        if _launch_rank() != 0:
            return None
        node = config.hydra.run if key == "hydra.run.dir" else config.hydra.sweep
        folder = Path(str(node.dir))
        try:
            check_writable(folder, key, keep=False)
            if key == "hydra.run.dir" and not self._chosen(config, key):
                fresh = _fresh_folder(folder)
                if fresh != folder:
                    log.info(
                        "%s is taken by a run started in the same second: using %s", folder, fresh
                    )
                    with read_write(node):
                        node.dir = str(fresh)
                folder = fresh
            lock = RunFolderLock(folder, key)
            lock.acquire()
            return lock
        except StnlabError as err:
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_lock = self._claim(config, "hydra.sweep.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_lock is not None:
            self.sweep_lock.release()


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
