"""Table-1 report over training runs: ``python src/report.py runs=[dir,…]`` (see README)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from stnlab.tasks.report import report
from stnlab.tasks.runner import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    run(report, cfg)


if __name__ == "__main__":
    main()
