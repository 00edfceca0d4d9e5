"""The CSV files of the analysis commands (``results.csv``, ``robustness.csv``,
``report.csv``): one writer, so they all quote, order and leave blanks alike."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


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
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    return target
