"""The gallery task: ``python src/gallery.py out_dir=DIR`` writes a labelled sample grid
per data variant."""

from __future__ import annotations

import logging
from pathlib import Path

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
from stnlab.tasks.runner import task

log = logging.getLogger(__name__)


@task()
def gallery(cfg: DictConfig) -> list[Path]:
    """Compose each variant's data config, render its fixed test set, write the grids."""
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
    paths = write_gallery(samples, cfg.out_dir, cols=cfg.cols)
    for path in paths:
        log.info("wrote %s", path)
    return list(paths)
