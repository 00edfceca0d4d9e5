"""Log what the transformer does: a fixed probe batch, inputs beside their transformed images."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from stnlab.callbacks.cadence import EveryNEpochs
from stnlab.image_grid import side_by_side

log = logging.getLogger(__name__)


class TransformGridCallback(EveryNEpochs):
    """Every ``every_n_epochs`` (and after the last epoch) log a transform grid.

    The probe batch is the first ``num_probes`` fixed validation images, so every grid of a
    run shows the same digits. Each grid goes to every W&B logger (``log_image``) and, for
    any logger, to ``<dirpath>/epoch_XXX.png``. Models without a transformer are told once
    and skipped.

    Args:
        dirpath: folder for the PNG files (the run's ``transform_grids/`` by default config).
        every_n_epochs: log after every N-th training epoch (must be >= 1).
        num_probes: number of probe images (a square number fills the grid).
        upscale: integer zoom of the PNG for legibility.
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_epochs: int = 5,
        num_probes: int = 16,
        upscale: int = 3,
    ) -> None:
        super().__init__(every_n_epochs, "callbacks.transform_grid")
        if num_probes < 1:
            raise ValueError(f"callbacks.transform_grid.num_probes must be >= 1, got {num_probes}")
        self.dirpath = Path(dirpath)
        self.num_probes = num_probes
        self.upscale = upscale
        self._warned = False

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> bool:
        """Render the probe batch through the transformer and log it as ``epoch``."""
        net = getattr(pl_module, "net", None)
        transformed_input = getattr(net, "transformed_input", None)
        datamodule = getattr(trainer, "datamodule", None)
        if (
            transformed_input is None
            or datamodule is None
            or not hasattr(datamodule, "probe_batch")
        ):
            self._warn_once("the model or datamodule cannot show a transform; no grids logged")
            return False
        inputs, _ = datamodule.probe_batch(self.num_probes)
        inputs = inputs.to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            outputs = transformed_input(inputs)
        pl_module.train(was_training)
        if outputs is None:
            self._warn_once("the model has no spatial transformer; no transform grids logged")
            return False
        if trainer.global_rank != 0:
            return True
        image = side_by_side(inputs, outputs, zoom=self.upscale)  # uint8: W&B saves floats black
        self.dirpath.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(self.dirpath / f"epoch_{epoch:03d}.png")
        caption = f"epoch {epoch}: inputs (left) → transformed (right)"
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    key="transform_grid",
                    images=[image],
                    caption=[caption],
                    step=trainer.global_step,
                )
        return True

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            log.warning("TransformGridCallback: %s", message)
            self._warned = True
