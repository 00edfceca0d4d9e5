"""One runner for every command: what happens on failure, at the end, and on SIGTERM.

Every task (train, eval, report, robustness, predict, export, gallery) is a function of
the composed config decorated with :func:`task`, which

* holds the run folder (:class:`~stnlab.run_folder.RunFolderLock`; a second process on
  it is refused) and removes temporary files a killed run left there;
* turns SIGTERM into :class:`~stnlab.errors.TerminatedError` (exit status 143) whose
  message names the last good checkpoint and, for training, the command to resume;
* writes ``failure.json`` in the run folder when the task fails, and always finishes the
  W&B run;
* routes Lightning's log lines and Python warnings through Hydra's logging
  (:func:`route_logs`), so the run folder's ``<task>.log`` (``train.log``) holds what the
  console shows.

The entry points under ``src/`` are ``@hydra.main`` plus :func:`run`, which prints a
user's problem as one line and exits with its status (1, or 143 for SIGTERM); in a
multirun a failed job is logged and returns ``None`` so the other jobs go on.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from stnlab.checkpoints import checkpoint_dir, own_last_checkpoint
from stnlab.errors import ConfigError, RefusedError, TerminatedError, user_error_message
from stnlab.loggers import close_wandb
from stnlab.run_folder import RunFolderLock, sigterm_raises
from stnlab.temp_files import remove_stale_temp_files, write_text

log = logging.getLogger(__name__)
T = TypeVar("T")
TaskFn = TypeVar("TaskFn", bound=Callable[[DictConfig], Any])


def write_failure(output_dir: Path, err: BaseException) -> None:
    """Record why a run failed in ``<output_dir>/failure.json`` (sweep summaries read it)."""
    record: dict[str, Any] = {"error": type(err).__name__, "message": str(err)}
    if isinstance(err, TerminatedError):
        record["terminated"] = True
    try:
        write_text(output_dir / "failure.json", json.dumps(record, indent=2))
    except OSError:
        log.warning("could not write failure.json in %s", output_dir)


def _terminated(cfg: DictConfig, resumable: bool) -> TerminatedError:
    """The SIGTERM message: the last good checkpoint and, for training, how to resume."""
    output_dir = Path(cfg.paths.output_dir)
    last = own_last_checkpoint(checkpoint_dir(cfg)) if resumable else None
    if not resumable:
        return TerminatedError("terminated by SIGTERM")
    if last is None:
        return TerminatedError("terminated by SIGTERM; no checkpoint had been written")
    overrides = ""
    with contextlib.suppress(Exception):
        task = [o for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path=")]
        overrides = " ".join(shlex.quote(o) for o in task) + " "
    folder = shlex.quote(f"hydra.run.dir={output_dir}")  # pasted into a shell as printed
    return TerminatedError(
        f"terminated by SIGTERM; last good checkpoint: {last}. Resume with: python "
        f"src/train.py {overrides}{folder} ckpt_path=last"
    )


LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics")
"""Loggers that get a console handler of their own at import (``lightning.pytorch`` and
``lightning.fabric`` also stop propagating when imported before logging is configured, as
``src/train.py`` imports them before Hydra configures it)."""

NOISE_WARNINGS = (
    # Lightning 2.6's CombinedLoader builds torch's LeafSpec, which current torch deprecates
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        r"lightning\.pytorch\.utilities\._pytree",
    ),
)
"""``(message regex, module regex)`` of warnings a user did not cause and cannot act on."""


class _NoTips(logging.Filter):
    """Drops Lightning's advertisements ("💡 Tip: … try installing litlogger …")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def route_logs() -> None:
    """Send Lightning's log lines and Python warnings to the handlers Hydra configured (the
    console and the run folder's ``<task>.log``), without Lightning's advertising tips and the
    warnings of :data:`NOISE_WARNINGS`. Idempotent."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):  # the bare StreamHandlers they add
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in rank_zero.filters):
        rank_zero.addFilter(_NoTips())
    for message, module in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    logging.captureWarnings(True)  # warnings.warn → logger "py.warnings" → console and file


def task(resumable: bool = False) -> Callable[[TaskFn], TaskFn]:
    """Decorate a task ``fn(cfg)``: run-folder lock, SIGTERM, ``failure.json``, W&B finish.

    ``resumable``: training; the SIGTERM message tells how to resume, and a checkpoint
    folder outside the run folder is held too. Only the first process of a run (rank 0)
    holds the folders and writes ``failure.json``.
    """

    def decorate(fn: TaskFn) -> TaskFn:
        @functools.wraps(fn)
        def wrapper(cfg: DictConfig) -> Any:
            route_logs()
            output_dir = Path(cfg.paths.output_dir)
            rank = getattr(rank_zero_only, "rank", 0)
            locks = [RunFolderLock(output_dir)]
            if resumable:  # checkpoints kept outside the run folder are held as well
                folder = checkpoint_dir(cfg)
                if not folder.resolve().is_relative_to(output_dir.resolve()):
                    locks.append(RunFolderLock(folder, "callbacks.model_checkpoint.dirpath"))
            if rank == 0:
                locks[0].acquire()  # refused: nothing written, not even failure.json
            try:
                with sigterm_raises():
                    if rank == 0:
                        for lock in locks[1:]:  # busy: RefusedError, no failure.json either
                            lock.acquire()
                        remove_stale_temp_files(output_dir)
                    return fn(cfg)
            except BaseException as err:
                if isinstance(err, TerminatedError | SIGTERMException):
                    err = _terminated(cfg, resumable)
                if rank == 0 and not isinstance(err, RefusedError):
                    write_failure(output_dir, err)
                if isinstance(err, TerminatedError):
                    raise err from None
                raise
            finally:
                close_wandb()
                for lock in locks:
                    lock.release()

        return wrapper  # type: ignore[return-value]

    return decorate


def run(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T | None:
    """What an entry point does with a task: its result, or a one-line error and an exit.

    A problem the user can fix (:func:`~stnlab.errors.user_error_message`) is printed
    without a traceback and the process exits with its status (1; 143 after SIGTERM);
    anything else keeps its traceback. In a multirun a failed job is logged with its
    number and returns ``None`` (an Optuna search then records a failed trial), except
    after SIGTERM, which stops the whole sweep.
    """
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return fn(cfg)
    except Exception as err:
        message = user_error_message(err)
        code = getattr(err, "exit_code", 1)
        if multirun and code == 1:
            job = HydraConfig.get().job.num
            if message is None:
                log.exception("job %s failed with an unexpected error", job)
            else:
                log.error("job %s failed: %s", job, message)
            return None
        if message is None:
            raise
        log.error("%s", message)
        log.debug("where it happened", exc_info=True)  # hydra.verbose=true shows it
        if multirun and isinstance(err, TerminatedError):
            if _in_process_launcher():
                _end_terminated_sweep(cfg)  # exits with 143
            # a parallel launcher's worker: its job is saved; end the process rather than
            # return to an idle pool, so the sweep's process stops waiting for it at once
            logging.shutdown()
            os._exit(code)
        sys.exit(code)


def _in_process_launcher() -> bool:
    """Whether this multirun's jobs run in the sweep's own process (the basic launcher):
    then the job, not the sweep's process, receives SIGTERM."""
    return str(HydraConfig.get().launcher.get("_target_", "")).endswith("BasicLauncher")


def _end_terminated_sweep(cfg: DictConfig) -> None:
    from stnlab.analysis.sweep import report_sweep

    metric = cfg.get("optimized_metric") or "val/acc_best"
    report_sweep(str(HydraConfig.get().sweep.dir), metric, terminated=True)


def finite_metric(metrics: dict[str, Any], name: str | None) -> float | None:
    """``metrics[name]`` when it is a finite number (what a sweeper optimises), else None."""
    value = metrics.get(name or "")
    return float(value) if isinstance(value, float | int) and math.isfinite(value) else None


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu`` / ``cuda`` / ``cuda:1`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device={name!r} is not a device; valid: auto, cpu, cuda, cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is available; use device=cpu")
    return device
