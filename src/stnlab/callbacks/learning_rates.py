"""The learning rate of each parameter group over the steps, in every logger."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor


class LearningRates(LearningRateMonitor):
    """Lightning's ``LearningRateMonitor``, one curve per parameter group: ``lr-<optimiser>/
    backbone`` and ``lr-<optimiser>/transformer`` (``lr × loc_lr_mult``), so the schedule's
    warm-up, decay and drops, and the transformer's own rate, show beside the losses.

    Logged every ``trainer.log_every_n_steps`` steps (``logging_interval="step"``). A run
    without a logger (``logger=null``) gets nothing instead of Lightning's error.
    """

    def __init__(self, logging_interval: str | None = "step", **kwargs: Any) -> None:
        super().__init__(logging_interval=logging_interval, **kwargs)  # type: ignore[arg-type]
        self._active = True

    def on_train_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._active = bool(trainer.loggers)
        if self._active:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._active:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._active:
            super().on_train_epoch_start(trainer, *args, **kwargs)
