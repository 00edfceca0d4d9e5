"""Export a checkpoint: ``python src/export.py ckpt_path=… format=pt2|onnx|torchscript``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from stnlab.tasks.export import export
from stnlab.tasks.runner import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run(export, cfg)


if __name__ == "__main__":
    main()
