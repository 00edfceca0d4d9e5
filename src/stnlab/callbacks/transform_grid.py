"""Log what the transformer does: a fixed probe batch, inputs beside their transformed images."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image
from torch import Tensor

log = logging.getLogger(__name__)


def _tile(images: Tensor, cols: int, pad: int) -> Tensor:
    """``(N, C, H, W)`` in ``[0, 1]`` → one tiled image ``(C, rows·(H+pad)+pad, …)``."""
    n, c, h, w = images.shape
    rows = math.ceil(n / cols)
    out = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 0.5)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        out[:, top : top + h, left : left + w] = images[i]
    return out


def make_grid_image(inputs: Tensor, outputs: Tensor, cols: int | None = None) -> np.ndarray:
    """Side-by-side grid of ``inputs`` and ``outputs`` (each ``(N, C, H, W)``, in ``[0, 1]``).

    Returns an ``uint8`` array ``(H_grid, W_grid, 3)``: the inputs tiled on the left, the
    transformed images tiled the same way on the right, split by a white bar. (W&B stores a
    float image as an all-black PNG, hence uint8.)
    """
    n = inputs.shape[0]
    cols = cols or max(1, math.isqrt(n))
    pad = 2
    left = _tile(inputs.detach().float().cpu().clamp(0, 1), cols, pad)
    right = _tile(outputs.detach().float().cpu().clamp(0, 1), cols, pad)
    height = max(left.shape[1], right.shape[1])
    left = torch.nn.functional.pad(left, (0, 0, 0, height - left.shape[1]), value=0.5)
    right = torch.nn.functional.pad(right, (0, 0, 0, height - right.shape[1]), value=0.5)
    bar = torch.ones(left.shape[0], height, 4)
    grid = torch.cat((left, bar, right), dim=2)
    if grid.shape[0] == 1:
        grid = grid.expand(3, -1, -1)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


class TransformGridCallback(L.Callback):
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
        if every_n_epochs < 1:
            raise ValueError(
                f"callbacks.transform_grid.every_n_epochs must be >= 1, got {every_n_epochs}"
            )
        if num_probes < 1:
            raise ValueError(f"callbacks.transform_grid.num_probes must be >= 1, got {num_probes}")
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.num_probes = num_probes
        self.upscale = upscale
        self._warned = False
        self._last_logged_epoch = -1
        self.written: list[Path] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1  # epochs completed
        # max_epochs=-1 (a step budget, as in the experiment presets) has no last epoch
        last = trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch
        if epoch % self.every_n_epochs == 0 or last:
            self.log_grid(trainer, pl_module, epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Also covers runs stopped early (max_steps, early stopping, interruption).
        if self._last_logged_epoch != trainer.current_epoch:
            self.log_grid(trainer, pl_module, trainer.current_epoch)

    def log_grid(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        """Render the probe batch through the transformer and log it as ``epoch``."""
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        transform = getattr(pl_module, "transform_inputs", None)
        datamodule = getattr(trainer, "datamodule", None)
        if transform is None or datamodule is None or not hasattr(datamodule, "probe_batch"):
            self._warn_once("the model or datamodule cannot show a transform; no grids logged")
            return
        inputs, _ = datamodule.probe_batch(self.num_probes)
        inputs = inputs.to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            outputs = transform(inputs)
        pl_module.train(was_training)
        if outputs is None:
            self._warn_once("the model has no spatial transformer; no transform grids logged")
            return
        self._last_logged_epoch = epoch
        if trainer.global_rank != 0:
            return
        image = make_grid_image(inputs, outputs)
        if self.upscale > 1:
            image = image.repeat(self.upscale, axis=0).repeat(self.upscale, axis=1)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"epoch_{epoch:03d}.png"
        Image.fromarray(image).save(path)
        self.written.append(path)
        caption = f"epoch {epoch}: inputs (left) → transformed (right)"
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    key="transform_grid",
                    images=[image],
                    caption=[caption],
                    step=trainer.global_step,
                )

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            log.warning("TransformGridCallback: %s", message)
            self._warned = True
