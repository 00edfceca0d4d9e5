"""Robustness curves: ``python src/robustness.py ckpts=[a.ckpt,b.ckpt]`` (see README)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from stnlab.errors import StnlabError
from stnlab.tasks import robustness

log = logging.getLogger("stnlab.robustness")


@hydra.main(version_base="1.3", config_path="../conf", config_name="robustness")
def main(cfg: DictConfig) -> None:
    """Write ``robustness.csv`` and ``robustness.png`` in the run folder and log them."""
    try:
        robustness(cfg)
    except StnlabError as err:
        log.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
