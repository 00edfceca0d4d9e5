"""Error against rotation, scale and shift: ``python src/robustness.py ckpts=[…]`` (see README)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from stnlab.tasks.evaluate import robustness
from stnlab.tasks.runner import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="robustness")
def main(cfg: DictConfig) -> None:
    run(robustness, cfg)


if __name__ == "__main__":
    main()
