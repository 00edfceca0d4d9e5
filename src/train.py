"""Train an STN classifier: ``python src/train.py [overrides]`` (see README)."""

from __future__ import annotations

import logging
import math
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from stnlab.errors import StnlabError
from stnlab.tasks import train

log = logging.getLogger("stnlab.train")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one training job; return the metric a sweeper optimises (``optimized_metric``).

    In a multirun a failing job is logged, recorded in its ``failure.json`` and returns
    NaN, so the other jobs (and an Optuna search) go on. A single run that fails on a
    problem the user can fix prints the message without a traceback and exits with 1.
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg)
    except StnlabError as err:
        if multirun:
            log.error("job %s failed: %s", HydraConfig.get().job.num, err)
            return math.nan
        log.error("%s", err)
        sys.exit(1)
    except Exception:
        if multirun:
            log.exception("job %s failed with an unexpected error", HydraConfig.get().job.num)
            return math.nan
        raise
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
