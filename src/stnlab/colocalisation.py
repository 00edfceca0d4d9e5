"""The co-localisation LightningModule (Jaderberg et al. 2015, appendix A.2).

A spatial transformer learns, from images of one digit class alone, to crop the digit:
the crops of two images must lie closer to each other, in a frozen classifier's embedding,
than a crop lies to a random crop of its own image (:func:`~stnlab.models.triplet_hinge`).
Neither class nor box labels enter the loss; the true boxes in the batches only measure
the result: the share of images whose predicted box overlaps the true one with IoU > 0.5.

A top-level module of its own, above :mod:`stnlab.checkpoints`: the encoder's weights are
read from the classifier's checkpoint through :func:`~stnlab.checkpoints.load_checkpoint_net`
(the one safe reader), and kept in this module's state dict, so resuming or testing a
co-localisation checkpoint never needs the encoder's file again.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MaxMetric, MeanMetric

from stnlab.checkpoints import load_checkpoint_net
from stnlab.checks import check_range
from stnlab.errors import CheckpointError, ConfigError
from stnlab.geometry import box_iou
from stnlab.models import Colocaliser, triplet_hinge
from stnlab.module import restore_best, save_run_record
from stnlab.schedules import check_interval, optimizer_config, scaled_lr

log = logging.getLogger(__name__)

BEST_KEY = "stnlab_val_hit_rate_best"
"""Where a checkpoint keeps the best validation hit rate so far."""

ENCODER_COMMAND = (
    "python src/train.py model=cnn data=mnist trainer.max_epochs=3 "
    "hydra.run.dir=outputs/coloc_encoder"
)
"""How the README trains the encoder this module needs."""


class ColocalisationModule(L.LightningModule):
    """Trains a :class:`~stnlab.models.Colocaliser`'s transformer with the triplet hinge.

    Logs ``train/loss`` (the box error while searching, then the hinge),
    ``train/coloc/search_hit_rate`` while searching and, every epoch,
    ``train/coloc/hit_rate`` (on the optimisation set itself, the paper's measure); every
    validation ``val/coloc/hit_rate``, ``val/coloc/mean_iou`` and
    ``val/coloc/hit_rate_best``; at test ``test/coloc/hit_rate`` and
    ``test/coloc/mean_iou``. A hit is a predicted box with IoU > ``iou_threshold`` with the
    true box.

    Args:
        net: the transformer and the frozen encoder.
        optimizer: a partial optimiser (``_partial_: true``) for the transformer.
        scheduler: an optional partial LR scheduler taking the optimiser (as
            :class:`~stnlab.module.STNLitModule`'s).
        scheduler_interval: ``"epoch"`` or ``"step"``.
        encoder_ckpt: a checkpoint of a plain classifier trained with ``src/train.py``
            (``model=cnn data=mnist``) whose weights become the encoder's. Needed for a
            fresh run only: a co-localisation checkpoint carries them.
        margin: the hinge's margin α (the paper's 1).
        iou_threshold: IoU above which a box counts as found (the paper's 0.5).
        loc_lr_mult: the transformer's LR is the optimiser's times this (accepted so
            every ``schedule=`` composes; the transformer is all that trains).
        label_smoothing: unused (no class labels here); accepted so that the schedules
            that set it for classifiers compose.
        search_steps: how the hinge is minimised. ``None`` (every step): the transformer
            learns to predict the boxes that :meth:`~stnlab.models.Colocaliser.search_boxes`
            picks for the batch (squared error of the box corners in canvas units; the
            search minimises the triplet hinge over a grid of crops, with no label or
            box). An integer ``n``: that for the first ``n`` steps, then gradient descent
            on the hinge itself; ``0`` is the paper's recipe, descent from the first step,
            which here drifts to background, and descent after a search leaves the digits
            too (docs/colocalisation.md).
    """

    def __init__(
        self,
        net: Colocaliser,
        optimizer: functools.partial,
        scheduler: functools.partial | None = None,
        scheduler_interval: str = "epoch",
        encoder_ckpt: str | None = None,
        margin: float = 1.0,
        iou_threshold: float = 0.5,
        loc_lr_mult: float = 1.0,
        label_smoothing: float = 0.0,
        search_steps: int | None = None,
    ) -> None:
        super().__init__()
        check_interval(scheduler_interval)
        check_range("model.margin", margin, minimum=0)
        check_range("model.iou_threshold", iou_threshold, minimum=0, below=1)
        check_range("model.loc_lr_mult", loc_lr_mult, above=0)
        if search_steps is not None:
            check_range("model.search_steps", search_steps, minimum=0)
        self.save_hyperparameters(
            {
                "scheduler_interval": scheduler_interval,
                "encoder_ckpt": None if encoder_ckpt is None else str(encoder_ckpt),
                "margin": float(margin),
                "iou_threshold": float(iou_threshold),
                "loc_lr_mult": float(loc_lr_mult),
                "search_steps": None if search_steps is None else int(search_steps),
            },
            logger=False,
        )
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # Saved with the weights: a restored module has its encoder whatever the file.
        self.register_buffer("encoder_loaded", torch.tensor(False))
        if encoder_ckpt is not None and Path(encoder_ckpt).is_file():
            self.load_encoder(encoder_ckpt)
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_hits", MeanMetric())
            setattr(self, f"{stage}_iou", MeanMetric())
        self.val_hit_rate_best = MaxMetric()
        self.run_config: dict[str, Any] | None = None

    # ------------------------------------------------------------------ encoder
    def load_encoder(self, path: str | Path) -> None:
        """Copy the weights of the classifier checkpoint ``path`` into the encoder."""
        classifier, _ = load_checkpoint_net(path)
        try:
            self.net.encoder.classifier.load_state_dict(classifier.state_dict())
        except RuntimeError as err:
            raise CheckpointError(
                f"model.encoder_ckpt={path}: its classifier does not fit the encoder of "
                f"model.net.encoder ({str(err).splitlines()[0]}); describe the same network "
                "there as the run that wrote it (its .hydra/config.yaml, model.net)"
            ) from None
        self.net.encoder.requires_grad_(False)
        self.encoder_loaded.fill_(True)
        log.info("co-localisation encoder: the classifier of %s", path)

    def _require_encoder(self) -> None:
        if bool(self.encoder_loaded):
            return
        path = self.hparams.encoder_ckpt
        where = "is not set" if path is None else f"={path} is not a file"
        raise ConfigError(
            f"model.encoder_ckpt {where}: co-localisation embeds its crops with a trained "
            f"classifier. Train one first ({ENCODER_COMMAND}) and pass "
            "model.encoder_ckpt=outputs/coloc_encoder/checkpoints/best.ckpt, or resume a "
            "co-localisation checkpoint (ckpt_path=…), which carries the encoder"
        )

    def on_fit_start(self) -> None:
        self._require_encoder()

    def on_test_start(self) -> None:
        self._require_encoder()

    def on_validation_start(self) -> None:
        self._require_encoder()

    # -------------------------------------------------------------------- steps
    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, H)`` in ``[0, 1]`` → predicted boxes ``(B, 4)`` in pixels."""
        return self.net.boxes(x)

    def _measure(self, boxes: Tensor, true: Tensor, stage: str) -> None:
        iou = box_iou(boxes.detach().float(), true.float())
        getattr(self, f"{stage}_hits").update((iou > self.hparams.iou_threshold).float())
        getattr(self, f"{stage}_iou").update(iou)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, true_boxes = batch  # the boxes only measure; the loss never reads them
        size = x.shape[-1]
        search_steps = self.hparams.search_steps
        if search_steps is None or self.global_step < search_steps:
            theta = self.net.transformer.predict_theta(x)
            target = self.net.search_boxes(x, self.hparams.margin)
            loss = F.mse_loss(self.net.boxes_of(theta, size) / size, target / size)
            found = box_iou(target.float(), true_boxes.float()) > self.hparams.iou_threshold
            self.log("train/coloc/search_hit_rate", found.float().mean(), on_epoch=True)
        else:
            if self.global_step == search_steps > 0:
                # The hinge's gradients are orders of magnitude above the box error's:
                # moment estimates from the search would turn its first steps into jumps.
                for optimizer in self.trainer.optimizers:
                    optimizer.state.clear()
            crops, theta = self.net.crop(x)
            with torch.no_grad():
                negatives = self.net.encoder(self.net.random_crops(x, theta))
            loss = triplet_hinge(self.net.encoder(crops), negatives, self.hparams.margin)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True)
        self._measure(self.net.boxes_of(theta.detach(), size), true_boxes, "train")
        return loss

    def on_train_epoch_end(self) -> None:
        if self.train_hits.update_called:
            self.log("train/coloc/hit_rate", self.train_hits.compute(), sync_dist=True)
            self.log("train/coloc/mean_iou", self.train_iou.compute(), sync_dist=True)
            self.train_hits.reset()
            self.train_iou.reset()

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, true_boxes = batch
        self._measure(self(x), true_boxes, stage)
        for name, metric in (("hit_rate", "hits"), ("mean_iou", "iou")):
            self.log(f"{stage}/coloc/{name}", getattr(self, f"{stage}_{metric}"), prog_bar=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_hit_rate_best(self.val_hits.compute())
        self.log("val/coloc/hit_rate_best", self.val_hit_rate_best.compute(), sync_dist=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ---------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.net.transformer.parameters() if p.requires_grad]
        lr = scaled_lr(self.optimizer_factory, self.hparams.loc_lr_mult)
        group = {"params": params, "lr": lr, "name": "transformer"}
        return optimizer_config(
            self.optimizer_factory(params=[group]),
            self.scheduler_factory,
            self.hparams.scheduler_interval,
            lambda: self.trainer.estimated_stepping_batches,
        )

    # -------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the run's config and the best validation hit rate to the checkpoint."""
        save_run_record(checkpoint, self.run_config, self.val_hit_rate_best, BEST_KEY)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the best validation hit rate saved with the weights."""
        restore_best(checkpoint, self.val_hit_rate_best, BEST_KEY)
