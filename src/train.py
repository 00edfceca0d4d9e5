"""Train an STN classifier: ``python src/train.py [overrides]`` (see README)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from stnlab.tasks import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one training job; return the metric a sweeper optimises (``optimized_metric``)."""
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
