"""Logger bookkeeping across a resume: every logger keeps the history written before it.

TensorBoard adds a new event file beside the old ones and W&B resumes the same run id
(offline: a second ``offline-run-*`` folder that ``wandb sync`` merges). Lightning's CSV
logger, though, deletes an existing ``metrics.csv`` when it starts; :func:`keep_csv_history`
puts the rows from before the resumed step back.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def keep_csv_history(loggers: list[Any], resume_step: int) -> None:
    """Keep each CSV logger's ``metrics.csv`` rows logged before ``resume_step``.

    Rows at or after ``resume_step`` were logged after the checkpoint being resumed and
    will be logged again, so they are dropped. Call before training starts.
    """
    for logger in loggers:
        if type(logger).__name__ != "CSVLogger":
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") and int(float(r["step"])) < resume_step]
        writer = logger.experiment  # Lightning deletes the old file here
        with open(path, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(rows)
        writer.metrics_keys = sorted(header)
        log.info("kept %d rows of %s from before step %d", len(rows), path, resume_step)
