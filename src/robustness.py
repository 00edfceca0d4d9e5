"""Robustness curves: ``python src/robustness.py ckpts=[a.ckpt,b.ckpt]`` (see README)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from stnlab.errors import exit_on_user_error
from stnlab.tasks import robustness

log = logging.getLogger("stnlab.robustness")


@hydra.main(version_base="1.3", config_path="../conf", config_name="robustness")
def main(cfg: DictConfig) -> None:
    """Write ``robustness.csv`` and ``robustness.png`` in the run folder and log them."""
    with exit_on_user_error(log):
        robustness(cfg)


if __name__ == "__main__":
    main()
