"""Test a checkpoint on every distortion: ``python src/eval.py ckpt_path=…`` (see README)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from stnlab.errors import exit_on_user_error
from stnlab.tasks import evaluate

log = logging.getLogger("stnlab.eval")


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Write ``results.csv`` and ``results.md`` in the run folder and log them."""
    with exit_on_user_error(log):
        evaluate(cfg)


if __name__ == "__main__":
    main()
