"""Stop a run that has gone wrong, with a message that says why and what to try."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

from stnlab.errors import TransformerCollapseError


def last_checkpoint_hint(trainer: L.Trainer) -> str:
    """A sentence naming the run's last good checkpoint (or saying there is none yet)."""
    callback = trainer.checkpoint_callback
    last = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    if last:
        return f"The last good checkpoint is kept: {last} (resume with ckpt_path={last})."
    return "No checkpoint had been written yet."


def find_transformer(pl_module: L.LightningModule) -> nn.Module | None:
    """The module's spatial transformer (``net.transformer``), if it has one."""
    return getattr(getattr(pl_module, "net", None), "transformer", None)


class CollapseDetector(L.Callback):
    """Stop training when the spatial transformer has collapsed.

    A collapsed transformer zooms out or slides until its output is almost all zero
    padding and the classifier sees nothing. Every ``check_every_n_steps`` training steps
    this callback measures, for that step's batch, the fraction of each sample's output
    that shows input (:func:`stnlab.geometry.grid_coverage`). When even the best sample
    of the batch is below ``min_coverage`` for ``patience`` checks in a row, it raises
    :class:`~stnlab.errors.TransformerCollapseError` naming the step; no checkpoint is written
    after that, so the last good one stays.

    Args:
        min_coverage: coverage below which a sample's output counts as empty.
        check_every_n_steps: how often to check (each check reads one number back from
            the device).
        patience: consecutive collapsed checks before stopping.
    """

    def __init__(
        self, min_coverage: float = 0.02, check_every_n_steps: int = 10, patience: int = 3
    ) -> None:
        if not 0.0 <= min_coverage < 1.0:
            raise ValueError(
                f"callbacks.collapse.min_coverage must be in [0, 1), got {min_coverage}"
            )
        if check_every_n_steps < 1 or patience < 1:
            raise ValueError(
                "callbacks.collapse.check_every_n_steps and patience must be >= 1, got "
                f"{check_every_n_steps} and {patience}"
            )
        self.min_coverage = min_coverage
        self.check_every_n_steps = check_every_n_steps
        self.patience = patience
        self.strikes = 0
        self._step = 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        transformer = find_transformer(pl_module)
        if transformer is not None:
            self._step = trainer.global_step
            transformer.track_coverage = trainer.global_step % self.check_every_n_steps == 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        transformer = find_transformer(pl_module)
        if transformer is None or not transformer.track_coverage:
            return
        transformer.track_coverage = False
        coverage = transformer.coverage
        if coverage is None:
            return
        best = float(coverage.max())
        collapsed = trainer.strategy.reduce_boolean_decision(best < self.min_coverage, all=True)
        self.strikes = self.strikes + 1 if collapsed else 0
        if self.strikes < self.patience:
            return
        hparams = pl_module.hparams
        raise TransformerCollapseError(
            f"the spatial transformer collapsed at global step {self._step} "
            f"(epoch {trainer.current_epoch}): in {self.patience} checked batch(es) in a row "
            f"every sample's output showed less than {self.min_coverage:.0%} of the input "
            f"(best sample: {best:.1%}). Usual causes: a localisation-net learning rate that "
            f"is too high (model.loc_lr_mult={hparams.get('loc_lr_mult')}; try 0.1) or a "
            "transformer fed inputs where zero padding looks like content (keep images in "
            "[0, 1] with a black background and normalise after the transformer). "
            f"Training stopped. {last_checkpoint_hint(trainer)}"
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        transformer = find_transformer(pl_module)
        if transformer is not None:
            transformer.track_coverage = False
