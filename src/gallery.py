"""Write a labelled sample grid per data variant: ``python src/gallery.py out_dir=DIR``."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, open_dict

from stnlab.analysis.gallery import write_gallery
from stnlab.config import compose_config
from stnlab.config_checks import (
    check_finite,
    check_range,
    check_targets,
    check_writable,
    instantiate_checked,
)
from stnlab.errors import exit_on_user_error

log = logging.getLogger("stnlab.gallery")


@hydra.main(version_base="1.3", config_path="../conf", config_name="gallery")
def main(cfg: DictConfig) -> None:
    """Compose each variant's data config, render its fixed test set, write the grids."""
    with exit_on_user_error(log):
        for key in ("num_samples", "cols"):
            check_range(key, cfg.get(key), integer=True, minimum=1)
        check_writable(cfg.out_dir, "out_dir", fix="Give out_dir= a writable folder.")
        samples = {}
        for variant in cfg.variants:
            train_cfg = compose_config("train", [f"data={variant}", *cfg.overrides])
            with open_dict(train_cfg):
                train_cfg.paths = cfg.paths
                train_cfg.seed = cfg.seed
            check_finite(train_cfg.data, "data")
            check_targets(train_cfg)
            datamodule = instantiate_checked(train_cfg.data, "data")
            datamodule.prepare_data()
            datamodule.setup("test")
            images, labels = datamodule.test_set.tensors[:2]
            samples[variant] = (images[: cfg.num_samples], labels[: cfg.num_samples])
        for path in write_gallery(samples, cfg.out_dir, cols=cfg.cols):
            log.info("wrote %s", path)


if __name__ == "__main__":
    main()
