"""Small value checks shared by every layer: numeric ranges, batch splits, writable folders.

Each raises :class:`~stnlab.errors.ConfigError` with a message that names the key, the bad
value and what would be valid. Whole-config checks (types, targets, optimisers, folders)
live in :mod:`stnlab.config_checks`.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

from stnlab.errors import ConfigError, StnlabError


def show_value(value: Any) -> str:
    """A config value as it is written on the command line: ``1.5``, ``'abc'``, ``[1, 2]``."""
    if hasattr(value, "_metadata"):  # an OmegaConf node
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, tuple):
        value = list(value)
    return repr(value) if isinstance(value, str) else str(value)


def _interval(
    minimum: float | None, above: float | None, maximum: float | None, below: float | None
) -> str:
    """`` >= 0``, `` in [0, 1)`` … for the bounds that are set."""

    def num(x: float) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    low = f"[{num(minimum)}" if minimum is not None else None
    low = f"({num(above)}" if above is not None else low
    high = f"{num(maximum)}]" if maximum is not None else None
    high = f"{num(below)})" if below is not None else high
    if low and high:
        return f" in {low}, {high}"
    if low:
        return (" >= " if low[0] == "[" else " > ") + low[1:]
    if high:
        return (" <= " if high[-1] == "]" else " < ") + high[:-1]
    return ""


def check_range(
    key: str,
    value: Any,
    *,
    integer: bool = False,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
    hint: str = "",
) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number in the given range.

    ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive ones;
    ``integer`` also rejects ``1.5``. NaN and infinity always fail (``nan < 0`` is False,
    so a bare comparison would let them through). The message reads ``key=value must
    be an integer >= 0`` followed by ``hint``.
    """
    what = ("an integer" if integer else "a finite number") + _interval(
        minimum, above, maximum, below
    )
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = (
        number
        and math.isfinite(value)
        and (not integer or isinstance(value, int))
        and (minimum is None or value >= minimum)
        and (above is None or value > above)
        and (maximum is None or value <= maximum)
        and (below is None or value < below)
    )
    if not ok:
        raise ConfigError(f"{key}={show_value(value)} must be {what}{hint}")


def check_batch_split(batch_size: int, processes: int, where: str) -> None:
    """The global batch must split evenly over the processes."""
    if processes > 1 and batch_size % processes:
        low = batch_size - batch_size % processes
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch, split over {processes} "
            f"processes ({where}); it must be divisible by {processes}, e.g. "
            f"{low or processes} or {low + processes}."
        )


def write_probe(directory: Path) -> None:
    """Create ``directory`` and a file in it, then remove the file; raise what stops that.

    A real write, not ``os.access``: root passes permission checks that a read-only file
    system still refuses.
    """
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".stnlab-write-test-{os.getpid()}"
    try:
        with open(probe, "wb"):
            pass
    finally:
        probe.unlink(missing_ok=True)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file or folder, through symlinks and hard links."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare where the links lead
        return Path(a).resolve() == Path(b).resolve()


def check_not_input(
    output: str | os.PathLike,
    inputs: dict[str, str | os.PathLike],
    key: str,
    error: type[StnlabError] = ConfigError,
) -> None:
    """Refuse an ``output`` that is one of the command's ``inputs`` (``{key: path}``),
    through symlinks and hard links: writing it would destroy what the command reads.

    ``error``: :class:`~stnlab.errors.RefusedError` where ``output`` is the run folder
    itself, so that not even ``failure.json`` lands among the inputs.
    """
    for name, path in inputs.items():
        if same_file(output, path):
            raise error(
                f"{key}={output} is the command's own input {name}={path}; writing it would "
                f"destroy it: give {key}= another file"
            )


_RUN_DIR_FIX = (
    "Point the run elsewhere, e.g. hydra.run.dir=<a writable folder> "
    "(hydra.sweep.dir for -m), or fix the folder's permissions."
)


def check_writable(
    directory: str | os.PathLike, key: str, *, fix: str = _RUN_DIR_FIX, keep: bool = True
) -> None:
    """Create ``directory`` and write a probe file in it, or explain why that fails.

    With ``keep=False`` the folders this created are removed again (a check at start-up
    must not leave empty folders behind a run that never writes into them).
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={directory} is a file, not a folder. {fix}")
    created = []
    for parent in (path, *path.parents):
        if parent.exists():
            break
        created.append(parent)
    try:
        write_probe(path)
    except OSError as err:
        raise ConfigError(
            f"{key}={directory} cannot be written ({type(err).__name__}: {err.strerror or err}). "
            f"{fix}"
        ) from None
    finally:
        if not keep:
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
