"""The gallery task: ``python src/gallery.py out_dir=DIR`` writes a labelled sample grid
per data variant and ``distortions.md``/``.csv``, the measurements of each variant's fixed
test set (:mod:`stnlab.analysis.distortion_stats`)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, open_dict

from stnlab.analysis.distortion_stats import (
    STATISTICS,
    distortion_statistics,
    statistics_table,
)
from stnlab.analysis.gallery import write_gallery
from stnlab.analysis.tables import output_files, write_csv
from stnlab.config import compose_config
from stnlab.config_checks import (
    check_finite,
    check_range,
    check_targets,
    check_writable,
    instantiate_checked,
)
from stnlab.data.datamodule import to_float
from stnlab.tasks.runner import task
from stnlab.temp_files import write_text

log = logging.getLogger(__name__)


@task()
def gallery(cfg: DictConfig) -> list[Path]:
    """Compose each variant's data config, render its fixed test set, write the grids and
    the measurements of every variant with one digit per image and a pose record."""
    for key in ("num_samples", "cols"):
        check_range(key, cfg.get(key), integer=True, minimum=1)
    check_writable(cfg.out_dir, "out_dir", fix="Give out_dir= a writable folder.")
    samples, stats = {}, {}
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
        poses = datamodule.fixed_poses("test")
        if poses is not None and len(poses) == 1:
            digits = to_float(datamodule.clean_test_digits())
            stats[variant] = distortion_statistics(digits, images, poses[0])
    paths = write_gallery(samples, cfg.out_dir, cols=cfg.cols)
    if stats:
        table, csv = output_files(cfg.out_dir, "distortions.md", "distortions.csv")
        write_text(table, statistics_table(stats), "table")
        rows = [{"variant": variant, **values} for variant, values in stats.items()]
        write_csv(csv, rows, ("variant", *STATISTICS))
        paths += [table, csv]
    for path in paths:
        log.info("wrote %s", path)
    return list(paths)
