"""The LightningModule: loss, metrics, optimiser with its own LR for the localisation net."""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from stnlab.checks import check_range
from stnlab.models import STNClassifier
from stnlab.schedules import check_interval, optimizer_config, scaled_lr


class STNLitModule(L.LightningModule):
    """Trains an :class:`~stnlab.models.STNClassifier` with cross-entropy.

    Logs ``train/loss_step`` (on the logging steps), ``train/loss_epoch``, ``train/acc``,
    ``val/loss``, ``val/acc``, ``val/acc_best``, ``test/loss``, ``test/acc`` and ``test/err``
    (error in %).

    Args:
        net: the classifier.
        optimizer: a partial optimiser (``_partial_: true``) taking parameter groups.
        scheduler: an optional partial LR scheduler taking the optimiser. A
            ``total_steps`` keyword below 1 (``${trainer.max_steps}`` of a run counted in
            epochs) becomes the trainer's estimate of the run's optimiser steps.
        scheduler_interval: ``"epoch"`` or ``"step"``: when the scheduler steps.
        loc_lr_mult: the transformer's learning rate is the optimiser's times this; STNs
            are known to collapse (zoom out until the digit vanishes) when it is too high.
        compile: compile the network with ``torch.compile`` (in place: checkpoints keep
            their keys). The first steps pay the compile time; see the README's
            Performance table for whether it pays off.
        num_classes: classes of the data (``${data.num_classes}`` in the config); ``None``
            (modules built before the config carried it) reads the network's last layer.
        label_smoothing: label smoothing of the training loss in ``[0, 1)``; validation
            and test losses stay plain cross-entropy, so they compare across settings.
    """

    def __init__(
        self,
        net: STNClassifier,
        optimizer: functools.partial,
        scheduler: functools.partial | None = None,
        scheduler_interval: str = "epoch",
        loc_lr_mult: float = 1.0,
        compile: bool = False,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        check_interval(scheduler_interval)
        check_range(
            "model.loc_lr_mult", loc_lr_mult, minimum=0, hint=" (0 freezes the localisation net)"
        )
        check_range("model.label_smoothing", label_smoothing, minimum=0, below=1)
        # The factories stay out of hparams: they are not plain data and would make the
        # checkpoint unloadable with weights_only=True. The checkpoint carries the resolved
        # config instead (``stnlab_config``).
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        if compile:
            self.net.compile()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if num_classes is None:
            num_classes = [m for m in net.modules() if isinstance(m, nn.Linear)][-1].out_features
        # One metric object per stage; "micro" = plain accuracy over samples.
        for stage in ("train", "val", "test"):
            acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
            setattr(self, f"{stage}_acc", acc)
            # A sample-weighted mean of the loss over the epoch (or the set), on the device.
            # The training loss skips the NaN check, which reads the device every step (a
            # non-finite loss is caught by callbacks.health.NonFiniteLossGuard instead).
            options = {"nan_strategy": "disable"} if stage == "train" else {}
            setattr(self, f"{stage}_loss", MeanMetric(**options))
        self.val_acc_best = MaxMetric()
        self.run_config: dict[str, Any] | None = None

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` in ``[0, 1]`` → logits ``(B, num_classes)``."""
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        """Loss and metrics of one batch; returns ``(loss, logits (B, num_classes))``."""
        x, y = batch
        logits = self(x)
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        acc = getattr(self, f"{stage}_acc")
        # update(), not forward(): no per-batch value to compute, which costs more than the
        # update itself on small models (see docs/performance.md).
        acc.update(logits.detach(), y)
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(loss.detach(), weight=len(y))
        if stage == "train":
            # train/loss_step goes to Lightning only on the steps that show it (a logging
            # step, or every step under a progress bar): log() every step cost 2-3% of a
            # small model's step on the CPU, all of it Python (docs/performance.md).
            # train/loss_epoch and train/acc are logged once per epoch (on_train_epoch_end).
            if self._step_value_shown():
                self.log("train/loss_step", loss.detach(), on_step=True, prog_bar=True)
            return loss, logits
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss, logits

    def _step_value_shown(self) -> bool:
        """Whether this training step's values reach a logger or a progress bar: the steps
        Lightning writes to the loggers (every ``trainer.log_every_n_steps``, counted in
        optimiser steps), every step of ``fast_dev_run``, every step under a progress bar."""
        trainer = self.trainer
        if trainer.progress_bar_callback is not None or trainer.fast_dev_run:
            return True
        every = trainer.log_every_n_steps
        return every > 0 and (trainer.global_step + 1) % every == 0

    def on_train_epoch_end(self) -> None:
        if self.train_loss.update_called:
            self.log("train/loss_epoch", self.train_loss.compute(), sync_dist=True, prog_bar=True)
            self.train_loss.reset()
        if self.train_acc.update_called:
            self.log("train/acc", self.train_acc.compute(), sync_dist=True, prog_bar=True)
            self.train_acc.reset()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        # A non-finite loss is caught by callbacks.health.NonFiniteLossGuard, off this path.
        return self._step(batch, "train")[0]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # sanity batches do not count towards the best
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """The batch's logits ``(B, num_classes)``, for callbacks (the error analysis)."""
        return self._step(batch, "test")[1].detach()

    def on_test_epoch_end(self) -> None:
        self.log("test/err", 100.0 * (1.0 - self.test_acc.compute()), sync_dist=True)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser over two parameter groups: ``backbone`` (everything but the
        transformer) and ``transformer`` at ``lr × loc_lr_mult``."""
        loc = self.net.transformer
        loc_params = list(loc.parameters()) if loc is not None else []
        loc_ids = {id(p) for p in loc_params}
        other = [p for p in self.net.parameters() if id(p) not in loc_ids]
        groups: list[dict[str, Any]] = [{"params": other, "name": "backbone"}]
        if loc_params:
            lr = scaled_lr(self.optimizer_factory, self.hparams.loc_lr_mult)
            groups.append({"params": loc_params, "lr": lr, "name": "transformer"})
        return self.optimizer_factory(params=groups)

    def configure_optimizers(self) -> dict[str, Any]:
        return optimizer_config(
            self.make_optimizer(),
            self.scheduler_factory,
            self.hparams.scheduler_interval,
            lambda: self.trainer.estimated_stepping_batches,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add what Lightning does not keep of the learning: the config and best accuracy."""
        save_run_record(checkpoint, self.run_config, self.val_acc_best, "stnlab_val_acc_best")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the best validation accuracy saved with the weights."""
        restore_best(checkpoint, self.val_acc_best, "stnlab_val_acc_best")


def save_run_record(
    checkpoint: dict[str, Any], run_config: dict[str, Any] | None, best: MaxMetric, key: str
) -> None:
    """Put the run's resolved config (``stnlab_config``) and the best value of ``best`` so
    far (under ``key``) into ``checkpoint``: what Lightning does not keep of a run."""
    if run_config is not None:
        checkpoint["stnlab_config"] = run_config
    if best.update_called:
        checkpoint[key] = float(best.compute())


def restore_best(checkpoint: dict[str, Any], best: MaxMetric, key: str) -> None:
    """Set ``best`` to the value :func:`save_run_record` stored under ``key``, if any."""
    value = checkpoint.get(key)
    if value is not None:
        best.reset()
        best(torch.tensor(value))
