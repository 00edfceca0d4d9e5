"""Classify your own images: ``python src/predict.py ckpt_path=… input=…`` (see README)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from stnlab.tasks.predict import predict
from stnlab.tasks.runner import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run(predict, cfg)


if __name__ == "__main__":
    main()
