"""The errors stnlab raises for problems a user can fix; each message says what to do.

The entry points print these without a traceback (``src/train.py``); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class StnlabError(Exception):
    """Base class: the message names the bad value and what would be valid."""

    exit_code = 1  # the entry points exit with this status


class ConfigError(StnlabError, ValueError):
    """A config value is invalid, or two values do not fit together."""


class CheckpointError(StnlabError, ValueError):
    """A checkpoint is missing, unreadable, or belongs to another model."""


class TrainingError(StnlabError, RuntimeError):
    """Training cannot go on (non-finite loss, collapsed transformer)."""


class NonFiniteLossError(TrainingError, FloatingPointError):
    """The training loss became NaN or infinite."""


class TransformerCollapseError(TrainingError):
    """The spatial transformer maps (nearly) every output pixel outside the input."""


class RunFolderBusyError(StnlabError):
    """Another live process holds the run folder."""


class TerminatedError(StnlabError):
    """The run received SIGTERM (a scheduler's pre-emption, ``kill``); exit status 143."""

    exit_code = 143
