"""The files of the analysis commands: the folder they go in (:func:`output_files`) and
their CSV tables (``results.csv``, ``robustness.csv``, ``report.csv``): one writer, so they
all quote, order and leave blanks alike."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stnlab.temp_files import atomic_path


def output_files(out_dir: str | Path, *names: str) -> tuple[Path, ...]:
    """Create ``out_dir`` (with its parents) and return the path of each of ``names`` in it.

    >>> import tempfile, pathlib
    >>> md, csv_path = output_files(pathlib.Path(tempfile.mkdtemp()) / "a" / "b", "t.md", "t.csv")
    >>> md.parent.is_dir(), csv_path.name
    (True, 't.csv')
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return tuple(out / name for name in names)


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> Path:
    """Write ``rows`` as CSV with the columns ``fields`` (in that order); ``None`` and
    missing values become empty cells. Returns the path.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> print(write_csv(path, [{"a": 1, "b": None}], ["a", "b"]).read_text().strip())
    a,b
    1,
    """
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    return target
