"""Export a checkpoint: ``python src/export.py ckpt_path=… format=torchscript|onnx|pt2``."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from stnlab.errors import ConfigError, exit_on_user_error
from stnlab.inference import export_checkpoint

log = logging.getLogger("stnlab.export")


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    """Write the exported model and check that it reproduces the checkpoint's logits."""
    with exit_on_user_error(log):
        if cfg.get("ckpt_path") in (None, "", "???"):
            raise ConfigError("ckpt_path is required: python src/export.py ckpt_path=<file.ckpt>")
        path, diff = export_checkpoint(
            cfg.ckpt_path, str(cfg.format), Path(cfg.paths.output_dir), cfg.get("output")
        )
        print(path)
        log.info("wrote %s (largest logit difference to the checkpoint: %.2g)", path, diff)


if __name__ == "__main__":
    main()
