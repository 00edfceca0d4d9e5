"""Temporary files of atomic writes: ``.<name>.tmp-<pid>`` (checkpoints) and
``.<name>.part-<pid>`` (data files) are written beside their target and renamed over it.
A killed process leaves its temporary file behind; :func:`remove_stale_temp_files`
deletes those of processes that no longer run, so they never accumulate.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\..+\.(?:tmp|part)-(\d+)$")


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(*folders: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>`` / ``.<name>.part-<pid>`` files of dead processes.

    Looks in each folder and its subfolders (checkpoints, data); files of a live process
    (another run writing right now) are left alone. Returns what was removed.
    """
    removed = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in root.rglob(".*"):
            match = _TEMP.match(path.name)
            if match and path.is_file() and not pid_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by killed runs", len(removed))
    return removed
