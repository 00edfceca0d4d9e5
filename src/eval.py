"""Test a checkpoint on every distortion: ``python src/eval.py ckpt_path=…`` (see README)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from stnlab.tasks.evaluate import evaluate
from stnlab.tasks.runner import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run(evaluate, cfg)


if __name__ == "__main__":
    main()
