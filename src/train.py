"""Train an STN classifier: ``python src/train.py [overrides]`` (see README)."""

from __future__ import annotations

import logging
import math
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from stnlab.errors import user_error_message
from stnlab.launching import ddp_job_scope
from stnlab.tasks import train

log = logging.getLogger("stnlab.train")
# conf/hydra/launcher/{joblib,submitit_*}.yaml share their names with the plugins' schemas,
# which Hydra then uses to validate them: intended, so its deprecation notice is noise.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one training job; return the metric a sweeper optimises (``optimized_metric``).

    In a multirun a failing job is logged, recorded in its ``failure.json`` and returns
    ``None``, so the other jobs go on and an Optuna search records the trial as failed
    (the Optuna sweeper crashes on NaN, but marks a value it cannot read as a failed
    trial). When all jobs have run, a grid with a failed job exits with 1, a search only
    when every trial failed (``SweepSummary`` in ``stnlab.analysis.sweep``). A single run
    that fails on a problem the user can fix (see :func:`~stnlab.errors.user_error_message`)
    prints the message without a traceback and exits with 1.
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        with ddp_job_scope():
            metrics = train(cfg)
    except Exception as err:
        message = user_error_message(err)
        code = getattr(err, "exit_code", 1)
        if multirun and code == 1:  # SIGTERM (143) stops the whole sweep
            if message is None:
                log.exception("job %s failed with an unexpected error", HydraConfig.get().job.num)
            else:
                log.error("job %s failed: %s", HydraConfig.get().job.num, message)
            return None
        if message is None:
            raise
        log.error("%s", message)
        sys.exit(code)
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if isinstance(value, float | int) and math.isfinite(value) else None


if __name__ == "__main__":
    main()
