"""Train an STN classifier: ``python src/train.py [overrides]`` (see README)."""

from __future__ import annotations

import warnings

import hydra
from omegaconf import DictConfig

from stnlab.tasks.runner import run
from stnlab.tasks.train import train_job

# conf/hydra/launcher/{joblib,submitit_*}.yaml share their names with the plugins' schemas,
# which Hydra then uses to validate them: intended, so its deprecation notice is noise.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one training job; return the metric a sweeper optimises (``optimized_metric``).

    A failed job of a multirun is logged and recorded in its ``failure.json`` and returns
    ``None``, so the other jobs go on and an Optuna search records a failed trial.
    """
    return run(train_job, cfg)


if __name__ == "__main__":
    main()
