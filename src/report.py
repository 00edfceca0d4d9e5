"""Table-1 report over training runs: ``python src/report.py runs=[dir,…]`` (see README)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from stnlab.analysis.report import build_report
from stnlab.errors import ConfigError, exit_on_user_error

log = logging.getLogger("stnlab.report")


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    """Write ``report.md``, ``report.csv`` and ``report.png`` in the run folder."""
    with exit_on_user_error(log):
        runs = cfg.get("runs")
        if runs in (None, "", "???"):
            raise ConfigError("runs is required: python src/report.py runs=[<run or sweep dir>]")
        runs = [runs] if isinstance(runs, str) else list(runs)
        out = Path(cfg.paths.output_dir)
        build_report(runs, out, cfg.get("title", ""))
        print((out / "report.md").read_text())
        log.info("wrote report.md, report.csv and report.png in %s", out)


if __name__ == "__main__":
    main()
