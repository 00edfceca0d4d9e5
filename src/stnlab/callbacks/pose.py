"""Pose recovery during training: ``val/pose/*`` every validation epoch and a scatter of
applied against residual pose with the transform grids.

The measurement itself is :mod:`stnlab.models.pose_recovery`
(:func:`~stnlab.models.pose_recovery.match_poses`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from stnlab.callbacks.cadence import EveryNEpochs
from stnlab.callbacks.pictures import publish_picture
from stnlab.checks import check_range
from stnlab.image_grid import figure_pixels
from stnlab.models.pose_recovery import PoseMatching, PoseMeasurement, match_poses

log = logging.getLogger(__name__)


def pose_scatter_image(
    measurement: PoseMeasurement, title: str, max_points: int = 2000
) -> np.ndarray:
    """Applied against residual angle and log-scale, one dot per digit (the first
    ``max_points``), and the digits' centres before and after the transformer: an
    ``uint8`` image ``(H, W, 3)`` (W&B saves float images as black PNGs).

    Dots on the diagonal: the transformer left that pose as it was; on a horizontal line:
    it brought every digit to the same pose. In the shift panel, a cloud of centres that
    shrinks from grey (before) to blue (after) is a transformer that centres the digits.
    """
    from matplotlib.figure import Figure

    before = [t[:max_points].numpy() for t in measurement.residual_pose("before")]
    after = [t[:max_points].numpy() for t in measurement.residual_pose("after")]
    figure = Figure(figsize=(13, 4.2), dpi=100, layout="constrained")
    metrics = measurement.metrics
    panels = (
        (before[0], after[0], "angle (°)", "angle_std", "°", 10.0),
        (before[1], after[1], "log-scale", "log_scale_std", "", 0.1),
    )
    for i, (applied, residual, what, std, unit, least_half_span) in enumerate(panels):
        ax = figure.add_subplot(1, 3, i + 1)
        ax.scatter(applied, residual, s=4, alpha=0.4, linewidths=0)
        # one square range for both axes, never narrower than 2 × least_half_span
        low = float(min(applied.min(), residual.min()))
        high = float(max(applied.max(), residual.max()))
        middle, half = (low + high) / 2, max((high - low) / 2, least_half_span) * 1.05
        limits = (middle - half, middle + half)
        ax.plot(limits, limits, "--", color="grey", lw=1, label="nothing undone")
        ax.set_xlim(limits)
        ax.set_ylim(limits)
        ax.set_aspect("equal")
        ax.set_xlabel(f"applied {what}")
        ax.set_ylabel(f"residual {what} after the transformer")
        ax.set_title(
            f"std {metrics[f'{std}_before']:.3g}{unit} → {metrics[f'{std}_after']:.3g}{unit}",
            fontsize=10,
        )
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    ax = figure.add_subplot(1, 3, 3)
    for shift, colour, when in ((before[2], "grey", "before"), (after[2], "tab:blue", "after")):
        ax.scatter(shift[:, 0], shift[:, 1], s=4, alpha=0.4, linewidths=0, color=colour, label=when)
    reach = max(float(np.abs(before[2]).max()), float(np.abs(after[2]).max()), 1.0) * 1.05
    ax.set_xlim(-reach, reach)
    ax.set_ylim(reach, -reach)  # y down, as on the image
    ax.set_aspect("equal")
    ax.set_xlabel("digit centre x (px from the middle)")
    ax.set_ylabel("y (px, down)")
    before_std, after_std = metrics["shift_std_before"], metrics["shift_std_after"]
    ax.set_title(f"shift std {before_std:.3g} px → {after_std:.3g} px", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, markerscale=3)
    ax.grid(alpha=0.3)
    figure.suptitle(title)
    return figure_pixels(figure)


class PoseRecoveryCallback(EveryNEpochs):
    """Log how much of the validation digits' pose spread the transformer removes.

    After every validation epoch (not the sanity check) the localisation net runs, without
    gradients, on the fixed validation digits that validation covered (all of them unless
    ``trainer.limit_val_batches`` cuts the set), and ``val/pose/undone`` and the
    before/after standard deviations of angle, log-scale and shift (:data:`LOGGED`) are
    logged with the validation metrics to every logger. Every ``every_n_epochs`` epochs and
    after the last one (the transform grid's schedule), a scatter of applied against
    residual angle and log-scale, beside the digits' centres before and after, goes to
    ``<dirpath>/epoch_XXX.png`` and to every W&B and TensorBoard logger (``pose_scatter``).

    Models without a transformer on the input image (none, or ``transformer_at=features``)
    and data without a pose record are not applicable: nothing is logged, and one info
    line says why.

    Args:
        dirpath: folder of the PNG files (the run's ``pose/`` in the default config).
        every_n_epochs: plot after every N-th training epoch (must be >= 1).
        max_points: digits shown in a scatter.

    The localisation net runs, without gradients, in batches of the data module's
    ``eval_batch_size``.
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_epochs: int = 5,
        max_points: int = 2000,
    ) -> None:
        super().__init__(every_n_epochs, "callbacks.pose")
        check_range("callbacks.pose.max_points", max_points, integer=True, minimum=1)
        self.dirpath = Path(dirpath)
        self.max_points = max_points
        self._latest: tuple[int, PoseMatching] | None = None  # (global step, result)
        self._told = False

    # ----------------------------------------------------------------- metrics
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        matching = self.measure(trainer, pl_module)
        if matching is None:
            return
        for key, value in matching.logged().items():
            # every rank measures the same digits: the mean over ranks is that value
            pl_module.log(f"val/pose/{key}", value, sync_dist=True)

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> PoseMatching | None:
        """Pose recovery on the validation digits; ``None`` (said once) when it does not apply."""
        net = getattr(pl_module, "net", None)
        transformer = getattr(net, "input_transformer", None)
        if transformer is None:
            where = getattr(net, "transformer_at", "input")
            why = (
                "the transformer warps feature maps (transformer_at=features)"
                if getattr(net, "transformer", None) is not None and where != "input"
                else "the model has no spatial transformer"
            )
            return self._not_applicable(why)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "fixed_set"):
            return self._not_applicable("the data module keeps no fixed validation set")
        images, labels, _ = datamodule.fixed_set("val")
        poses = datamodule.fixed_poses("val")
        if poses is None:
            return self._not_applicable(f"{datamodule.distortion!r} keeps no pose record")
        n = self._covered(trainer, datamodule, len(images))
        batch_size = getattr(datamodule, "eval_batch_size", None) or 1000
        covered = tuple(pose[:n] for pose in poses)
        matching = match_poses(
            transformer, images[:n], covered, batch_size=batch_size, labels=labels[:n]
        )
        self._latest = (trainer.global_step, matching)
        return matching

    @staticmethod
    def _covered(trainer: L.Trainer, datamodule: Any, size: int) -> int:
        """How many of the fixed validation digits validation covered (its first ones); the
        whole set when that is not known or no validation ran (a plot measures then)."""
        batches = sum(trainer.num_val_batches or [])
        batch_size = getattr(datamodule, "eval_batch_size", None)
        if not batches or math.isinf(batches) or batch_size is None:
            return size
        return min(size, int(batches) * batch_size * trainer.world_size)

    def _not_applicable(self, why: str) -> None:
        if not self._told:
            log.info("pose recovery (val/pose/*) does not apply: %s; nothing logged", why)
            self._told = True
        return None

    # ------------------------------------------------------------------- plots
    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> bool:
        """Write and log the scatter of the latest measurement as ``epoch``."""
        if trainer.global_rank != 0:
            return False
        if self._latest is not None and self._latest[0] == trainer.global_step:
            matching: PoseMatching | None = self._latest[1]
        else:  # no validation since the last training step: measure now
            matching = self.measure(trainer, pl_module)
        if matching is None:
            return False
        measurement = matching.first
        undone = measurement.metrics["undone"]
        title = f"epoch {epoch}: pose undone {undone:.3f} (validation digits)"
        if len(matching.pairs) > 1:
            k, j = matching.matched[0]
            title = f"epoch {epoch}: transformer {k + 1} on digit {j + 1}, pose undone {undone:.3f}"
        image = pose_scatter_image(measurement, title, self.max_points)
        path = self.dirpath / f"epoch_{epoch:03d}.png"
        publish_picture(trainer, "pose_scatter", image, title, path)
        return True
