"""Atomic writes: every file a command writes goes through :func:`atomic_path`.

The content goes to a temporary file beside its target (``.<stem>.tmp-<pid><suffix>``;
data downloads use ``.<name>.part-<pid>``), is flushed to disk and renamed over the
target, so a failed write (full disk, killed process) leaves the earlier file intact. A
killed process leaves its temporary file behind; :func:`remove_stale_temp_files` deletes
them once the folder's lock says no other process writes there, so they never accumulate.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from stnlab.errors import StorageError

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\..+\.(?:tmp|part)-\d+(?:\.\w+)?$")


def temp_path(target: Path) -> Path:
    """Where :func:`atomic_path` writes ``target`` first: ``.<stem>.tmp-<pid><suffix>``
    (the suffix kept, so a library that picks the format from the name still can)."""
    return target.with_name(f".{target.stem}.tmp-{os.getpid()}{target.suffix}")


@contextlib.contextmanager
def atomic_path(
    target: str | os.PathLike, what: str = "file", advice: str | None = None
) -> Iterator[Path]:
    """Yield a temporary path to write ``target``'s new content to; on leaving the block
    it is flushed to disk and renamed over ``target`` (made with its folder if needed).

    A write that fails with an ``OSError`` (full disk, read-only folder) leaves ``target``
    as it was, removes the temporary file and raises a one-line
    :class:`~stnlab.errors.StorageError` naming ``what`` and the file, followed by
    ``advice`` (default: whether the earlier file is intact, and what to do).
    """
    target = Path(target)
    tmp = temp_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as err:
        if advice is None:
            kept = "the earlier one is intact" if target.exists() else "nothing was written"
            advice = f"{kept}: free some space or fix the folder, then run the command again"
        raise StorageError(
            f"could not write the {what} {target} ({err.strerror or err}); {advice}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(target: str | os.PathLike, text: str, what: str = "file") -> None:
    """Write ``text`` (UTF-8) to ``target`` through :func:`atomic_path`."""
    with atomic_path(target, what) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_stale_temp_files(*folders: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.tmp-<pid>`` / ``.<name>.part-<pid>`` files in ``folders`` and
    their subfolders (checkpoints, data).

    Call it only while holding the lock that makes this process the folder's one writer
    (the run folder's, or a data folder's fetch lock): any temporary file there was then
    left by a process that was killed. Returns what was removed.
    """
    removed = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in root.rglob(".*"):
            if _TEMP.match(path.name) and path.is_file():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by killed runs", len(removed))
    return removed
