"""One owner for showing a picture: the PNG in the run folder and every logger that shows
images (W&B and TensorBoard; the CSV logger has none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

from stnlab.image_grid import check_picture
from stnlab.temp_files import atomic_path


def log_picture(loggers: list[Any], key: str, image: np.ndarray, caption: str, step: int) -> None:
    """Send ``image`` ``uint8`` ``(H, W, 3)`` to every W&B and TensorBoard logger.

    W&B gets it under ``key`` with ``caption`` (``log_image``); TensorBoard under the tag
    ``key`` at ``step`` (``add_image``).
    Raises ``ValueError`` for a float or blank picture (:func:`check_picture`).
    """
    check_picture(image, key)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], caption=[caption], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")


def publish_picture(
    trainer: L.Trainer, key: str, image: np.ndarray, caption: str, path: Path | None
) -> None:
    """Write ``image`` to ``path`` (a PNG; ``None``: no file) and log it to the trainer's
    loggers at the current global step. Rank 0 only: other ranks return at once."""
    if trainer.global_rank != 0:
        return
    check_picture(image, key)
    if path is not None:
        with atomic_path(path, "picture") as tmp:
            Image.fromarray(image).save(tmp)
    log_picture(trainer.loggers, key, image, caption, trainer.global_step)
