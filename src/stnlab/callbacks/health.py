"""Stop a run that has gone wrong, with a message that says why and what to try."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from stnlab.checks import check_range
from stnlab.errors import NonFiniteLossError, TransformerCollapseError
from stnlab.geometry import grid_coverage


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


def batch_loss(outputs: Any) -> Tensor | None:
    """The loss a ``training_step`` returned (a tensor, or a dict's ``"loss"``), else None."""
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    return loss if isinstance(loss, Tensor) else None


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
        check_range("callbacks.collapse.min_coverage", min_coverage, minimum=0, below=1)
        for key, value in (("check_every_n_steps", check_every_n_steps), ("patience", patience)):
            check_range(f"callbacks.collapse.{key}", value, integer=True, minimum=1)
        self.min_coverage = min_coverage
        self.check_every_n_steps = check_every_n_steps
        self.patience = patience
        self.strikes = 0
        self._step = 0
        self._handle: Any = None  # the sampler hook while a step is watched
        self._coverage: Tensor | None = None

    def _watch(self, transformer: nn.Module) -> None:
        """Hook the transformer's sampler for one step: coverage of each sample ``(B,)``."""
        copies = getattr(transformer, "num_transformers", 1)

        def record(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            with torch.no_grad():
                self._coverage = grid_coverage(args[1].detach()).view(-1, copies).mean(dim=1)

        self._handle = transformer.sampler.register_forward_hook(record)

    def _unwatch(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        transformer = find_transformer(pl_module)
        self._unwatch()
        self._coverage = None
        if transformer is not None and trainer.global_step % self.check_every_n_steps == 0:
            self._step = trainer.global_step
            self._watch(transformer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *_batch_and_outputs: Any
    ) -> None:
        if self._handle is None:
            return
        self._unwatch()
        coverage = self._coverage
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
        self._unwatch()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._unwatch()


class NonFiniteLossGuard(L.Callback):
    """Stop training after a NaN or infinite training loss; never checkpoint after one.

    Each step only updates, on the loss's device, the global step of the first non-finite
    loss (no host–device synchronisation on the training path). The flag is read every
    ``check_every_n_steps`` steps, at the end of each epoch and of training, and before
    every checkpoint is written, so no checkpoint ever holds weights updated with a
    non-finite loss. Always installed by the train task.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        check_range("check_every_n_steps", check_every_n_steps, integer=True, minimum=1)
        self.every = check_every_n_steps
        self._first_bad: Tensor | None = None  # () int64 on the loss's device; -1: none yet
        self._where: dict[int, tuple[int, int]] = {}  # step → (epoch, batch) since last check

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = batch_loss(outputs)
        if loss is None:
            return
        step = trainer.global_step - 1  # the optimiser has stepped already
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.int64, device=loss.device)
        bad = ~torch.isfinite(loss.detach())
        self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)
        self._where[step] = (trainer.current_epoch, batch_idx)
        if trainer.global_step % self.every == 0:
            self.check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check(trainer, pl_module)  # raising here stops the file being written

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Raise :class:`~stnlab.errors.NonFiniteLossError` if a loss was not finite."""
        if self._first_bad is None:
            return
        step = int(self._first_bad)  # the one synchronisation, every N steps
        found = step >= 0
        if trainer.world_size > 1:  # every process stops together, none waits forever
            found = trainer.strategy.reduce_boolean_decision(found, all=False)
        if not found:
            self._where.clear()
            return
        epoch, batch = self._where.get(step, (trainer.current_epoch, -1))
        lrs = {
            g.get("name", i): g["lr"]
            for o in trainer.optimizers
            for i, g in enumerate(o.param_groups)
        }
        base_lr = getattr(getattr(pl_module, "optimizer_factory", None), "keywords", {}).get("lr")
        loc_lr_mult = getattr(pl_module, "hparams", {}).get("loc_lr_mult")
        raise NonFiniteLossError(
            f"the training loss became non-finite at global step {step} (epoch {epoch}, "
            f"batch {batch}); found at step {trainer.global_step}, and no checkpoint was "
            "written after it. Usual causes: too high a learning rate "
            f"(model.optimizer.lr={base_lr}; current LRs {lrs}) or localisation-net "
            f"learning rate (model.loc_lr_mult={loc_lr_mult}; try 0.1), or inputs that "
            f"are not finite. {last_checkpoint_hint(trainer)}"
        )
