"""Export a checkpoint: ``python src/export.py ckpt_path=… format=torchscript|onnx|pt2``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from stnlab.errors import ConfigError, StnlabError
from stnlab.export import export_checkpoint

log = logging.getLogger("stnlab.export")


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    """Write the exported model and check that it reproduces the checkpoint's logits."""
    try:
        if cfg.get("ckpt_path") in (None, "", "???"):
            raise ConfigError("ckpt_path is required: python src/export.py ckpt_path=<file.ckpt>")
        path, diff = export_checkpoint(
            cfg.ckpt_path, str(cfg.format), Path(cfg.paths.output_dir), cfg.get("output")
        )
        print(path)
        log.info("wrote %s (largest logit difference to the checkpoint: %.2g)", path, diff)
    except StnlabError as err:
        log.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
