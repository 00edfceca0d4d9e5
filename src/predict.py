"""Classify your own images: ``python src/predict.py ckpt_path=… input=…`` (see README)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from stnlab.errors import ConfigError, exit_on_user_error
from stnlab.inference import predict_files

log = logging.getLogger("stnlab.predict")


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    """Print one line per image; write predictions.csv and the images in the run folder."""
    with exit_on_user_error(log):
        for key in ("ckpt_path", "input"):
            if cfg.get(key) in (None, "", "???"):
                raise ConfigError(f"{key} is required: python src/predict.py ckpt_path=… input=…")
        out = Path(cfg.paths.output_dir)
        for row in predict_files(cfg.ckpt_path, cfg.input, out, str(cfg.invert).lower()):
            print(f"{row['file']}\t{row['predicted']}\t{row['probability']:.3f}")
        log.info("wrote predictions.csv and the transformed images in %s", out)


if __name__ == "__main__":
    main()
