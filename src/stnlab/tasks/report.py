"""The report task: ``python src/report.py runs=[…]`` builds Table 1 from training runs."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from stnlab.analysis.report import build_report
from stnlab.errors import ConfigError
from stnlab.tasks.runner import task

log = logging.getLogger(__name__)


@task()
def report(cfg: DictConfig) -> list[dict]:
    """Write ``report.md``, ``report.csv`` and ``report.png`` (co-localisation runs:
    ``colocalisation.md`` and ``.csv``) in the run folder and print the tables; return the
    aggregated Table-1 cells."""
    runs = cfg.get("runs")
    if runs in (None, "", "???"):
        raise ConfigError("runs is required: python src/report.py runs=[<run or sweep dir>]")
    runs = [runs] if isinstance(runs, str) else list(runs)
    out = Path(cfg.paths.output_dir)
    rows = build_report(runs, out, cfg.get("title", ""))
    for name, files in (
        ("report.md", "report.md, report.csv and report.png"),
        ("colocalisation.md", "colocalisation.md and colocalisation.csv"),
    ):
        if (out / name).is_file():
            print((out / name).read_text())
            log.info("wrote %s in %s", files, out)
    return rows
