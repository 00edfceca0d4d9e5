"""The errors stnlab raises for problems a user can fix; each message says what to do.

Every entry point runs its task through :func:`stnlab.tasks.runner.run`, which prints such
a problem as one line (:func:`user_error_message`) and exits with its ``exit_code`` (1;
143 after SIGTERM); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import html
import os
import re
import tempfile

from hydra.errors import ConfigCompositionException, OverrideParseException


class StnlabError(Exception):
    """Base class: the message names the bad value and what would be valid."""

    exit_code = 1  # the entry points exit with this status


class ConfigError(StnlabError, ValueError):
    """A config value is invalid, or two values do not fit together."""


class CheckpointError(StnlabError, ValueError):
    """A checkpoint is missing, unreadable, or belongs to another model."""


class StorageError(StnlabError, OSError):
    """A file or folder cannot be written: read-only, full disk, or a file in the way."""


class TrainingError(StnlabError, RuntimeError):
    """Training cannot go on (non-finite loss, collapsed transformer)."""


class NonFiniteLossError(TrainingError, FloatingPointError):
    """The training loss became NaN or infinite."""


class TransformerCollapseError(TrainingError):
    """The spatial transformer maps (nearly) every output pixel outside the input."""


class RefusedError(StnlabError):
    """The run would write over what another run owns; refused before the task wrote
    anything (no ``failure.json`` either)."""


class RunFolderBusyError(RefusedError):
    """Another live process holds the run folder."""


class TerminatedError(StnlabError):
    """The run received SIGTERM (a scheduler's pre-emption, ``kill``); exit status 143."""

    exit_code = 143


# What the machine, not the code, gets wrong: a full disk, a read-only folder, permissions.
_STORAGE_ADVICE = {
    errno.ENOSPC: "free some space or point the run at another disk (hydra.run.dir=…)",
    errno.EDQUOT: "free some space or point the run at another disk (hydra.run.dir=…)",
    errno.EROFS: "point the run at a writable folder (hydra.run.dir=…)",
    errno.EACCES: "fix the permissions or point the run elsewhere (hydra.run.dir=…)",
    errno.EPERM: "fix the permissions or point the run elsewhere (hydra.run.dir=…)",
}


def user_error_message(err: BaseException) -> str | None:
    """The one-line report of a problem the user can fix, or ``None`` for a bug.

    User problems are :class:`StnlabError`, a config override Hydra cannot apply (raised
    when a command composes a config itself), and an ``OSError`` of the machine (full
    disk, read-only file system, no permission), reported with the file it concerns.
    """
    if isinstance(err, StnlabError):
        return str(err)
    if isinstance(err, ConfigCompositionException | OverrideParseException):
        text = str(err).split("Config search path:")[0]
        if err.__cause__ is not None:
            text += f" ({err.__cause__})"
        return " ".join(text.split())  # Hydra's several lines, as one
    if isinstance(err, OSError) and err.errno in _STORAGE_ADVICE:
        where = err.filename or "a file"
        advice = _STORAGE_ADVICE[err.errno]
        if _in_temp_dir(where):  # W&B stages media there, outside the run folder
            advice = f"free some space in {tempfile.gettempdir()} or set TMPDIR to another disk"
        return f"{where}: {err.strerror}; {advice}"
    if _is_wandb_error(err):
        return wandb_error_message(err)
    return None


def _in_temp_dir(path: object) -> bool:
    """Whether ``path`` lies in the temporary folder and outside the current folder (a
    project cloned under /tmp writes its runs there, and those are not staged files)."""
    try:
        real = os.path.realpath(os.fspath(path))  # type: ignore[arg-type]
    except TypeError:
        return False
    temp = os.path.realpath(tempfile.gettempdir())
    here = os.path.realpath(os.getcwd())
    in_project = here != temp and real.startswith(here + os.sep)
    return real.startswith(temp + os.sep) and not in_project


def _is_wandb_error(err: BaseException) -> bool:
    """Whether ``err`` is one of W&B's own errors (``wandb.errors.Error``), without
    importing wandb."""
    return any(
        cls.__module__.startswith("wandb.errors") and cls.__name__ == "Error"
        for cls in type(err).__mro__
    )


def wandb_error_message(err: BaseException) -> str:
    """One line for an error W&B raised while starting or logging a run.

    A server that answers with a web page (not W&B's API: a proxy's login page, another
    service at ``WANDB_BASE_URL``) is named as such instead of printing the page.
    """
    text = str(err).strip()
    url = os.environ.get("WANDB_BASE_URL") or "the W&B server"
    page = text.replace("\\u003c", "<").replace("\\u003e", ">")  # HTML inside JSON
    if re.search(r"<!doctype html|<html", page, re.IGNORECASE):
        title = re.search(r"<title>(.*?)</title>", page, re.IGNORECASE | re.DOTALL)
        name = html.unescape(title.group(1)).strip() if title else "no title"
        status = re.search(r"error (\d{3})", page)
        code = f"HTTP {status.group(1)}, " if status else ""
        what = f"{url} answered with a web page ({code}{name!r}), not W&B's API"
    else:
        first = text.splitlines()[0][:300] if text else type(err).__name__
        what = f"W&B failed: {first}"
    return (
        f"{what}; check WANDB_BASE_URL and your W&B login, or log offline with "
        "WANDB_MODE=offline (upload later with `wandb sync`)"
    )
