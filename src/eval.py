"""Test a checkpoint on every distortion: ``python src/eval.py ckpt_path=…`` (see README)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from stnlab.errors import StnlabError
from stnlab.tasks import evaluate

log = logging.getLogger("stnlab.eval")


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Write ``results.csv`` and ``results.md`` in the run folder and log them."""
    try:
        evaluate(cfg)
    except StnlabError as err:
        log.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
