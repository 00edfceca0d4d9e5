"""When the picture-drawing callbacks draw: every N training epochs and after the last."""

from __future__ import annotations

import lightning as L


class EveryNEpochs(L.Callback):
    """Base of the callbacks that draw a picture every ``every_n_epochs`` training epochs.

    The picture of epoch ``e`` (epochs completed) is drawn after every epoch with
    ``e % every_n_epochs == 0``, after the last epoch of ``trainer.max_epochs``, and at the
    end of training if the run stopped elsewhere (a step budget, early stopping, an
    interruption), so every run ends with a picture of its final state. Subclasses
    implement :meth:`draw`.

    Args:
        every_n_epochs: draw after every N-th training epoch (must be >= 1).
        key: the config path named in the error message (``callbacks.transform_grid``).
    """

    def __init__(self, every_n_epochs: int, key: str) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"{key}.every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self._last_drawn_epoch = -1

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> bool:
        """Draw the picture of ``epoch``; return whether that epoch now counts as drawn."""
        raise NotImplementedError

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1  # epochs completed
        # max_epochs=-1 (a step budget, as in the experiment presets) has no last epoch
        last = trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch
        if epoch % self.every_n_epochs == 0 or last:
            self._draw(trainer, pl_module, epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_drawn_epoch != trainer.current_epoch:
            self._draw(trainer, pl_module, trainer.current_epoch)

    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        if self.draw(trainer, pl_module, epoch):
            self._last_drawn_epoch = epoch
