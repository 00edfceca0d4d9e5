"""Pose recovery: a number for "the transformer undid the distortion".

The data module keeps, for every fixed validation and test digit, where the distortion put
the digit's box (:class:`~stnlab.data.distortions.PoseRecord`). :func:`measure_pose` maps
those corners through the inverse of the transformer's warp onto its output and compares
the spread of poses before and after (:func:`~stnlab.geometry.pose_statistics`).
:class:`PoseRecoveryCallback` logs the result with the validation metrics every epoch
(``val/pose/*``) and plots applied against residual pose with the transform grids.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stnlab.callbacks.cadence import EveryNEpochs
from stnlab.callbacks.pictures import publish_picture
from stnlab.checks import check_range
from stnlab.data.distortions import PoseRecord
from stnlab.geometry import (
    POSE_METRICS,
    TransformFamily,
    box_corners,
    box_coverage,
    ink_kept,
    invert_points,
    pose_statistics,
    rotation_undone,
    similarity_fit,
    window_mask,
)
from stnlab.image_grid import figure_pixels
from stnlab.models import SpatialTransformer

log = logging.getLogger(__name__)

WINDOW_METRICS = ("zoom", "zoom_std", "digit_kept", "clutter_kept")
"""What the transformer's output window holds (:func:`window_statistics`)."""

UPRIGHT_EXCLUDED = (0, 1, 8)
"""Digits without a well-defined upright pose: ``rotation_undone_upright`` leaves them out."""

CLASS_ROTATION = tuple(f"rotation_undone_{k}" for k in range(10))

LOGGED = (
    *(key for key in POSE_METRICS if not key.startswith("spread_")),
    "rotation_undone_upright",
    *WINDOW_METRICS,
    *CLASS_ROTATION,
)
"""The pose statistics logged (``val/pose/<key>``) and tabled by ``src/eval.py``."""


def logged_statistics(metrics: dict[str, float]) -> dict[str, float]:
    """The :data:`LOGGED` entries of pose statistics, leaving out what does not apply:
    ``undone`` where the set has no pose spread to undo (plain digits), the rotation
    figures where it has no rotation, ``clutter_kept`` without clutter; a degenerate
    warp's NaN or inf is kept."""
    undefined = set()
    if not metrics["spread_before"] > 1e-6:
        undefined.add("undone")
    if not metrics["angle_std_before"] > 1e-2:
        undefined.update(key for key in LOGGED if key.startswith("rotation_undone"))
    # a figure that does not apply (no clutter, no digit of a class) is None
    return {
        key: metrics[key] for key in LOGGED if metrics.get(key) is not None and key not in undefined
    }


@dataclasses.dataclass
class PoseMeasurement:
    """Pose recovery of one set.

    Attributes:
        metrics: :func:`~stnlab.geometry.pose_statistics` of the set.
        before: ``(N, 4, 2)`` digit corners on the transformer's input, in its pixels from
            the centre (y down).
        after: ``(N, 4, 2)`` the same corners on the transformer's output, in the same unit.
        digit_size: side of the digit's box in its own pixels.
    """

    metrics: dict[str, float]
    before: Tensor
    after: Tensor
    digit_size: int

    def residual_pose(self, when: str) -> tuple[Tensor, Tensor, Tensor]:
        """Angle (degrees) and log-scale ``(N,)`` and shift ``(N, 2)`` (pixels from the
        centre, x right, y down) of every digit, ``"before"`` or ``"after"``."""
        src = box_corners(self.digit_size, dtype=torch.float64)
        return similarity_fit(src, getattr(self, when))


@torch.no_grad()
def measure_pose(
    transformer: SpatialTransformer,
    images: Tensor,
    pose: PoseRecord,
    canvas_size: int | None = None,
    batch_size: int = 1000,
    index: int = 0,
    labels: Tensor | None = None,
) -> PoseMeasurement:
    """Pose recovery of ``transformer`` on ``images`` ``(N, C, S, S)`` with their ``pose``.

    ``images`` are at the transformer's input size ``S``; ``canvas_size`` is the side of
    the canvas the pose record's pixels refer to (default ``S``; another value when the
    canvases were resized to fit the model). Corners are compared in normalised
    coordinates, so resizing changes nothing, and reported in pixels of the input
    (``S / 2`` per normalised unit) before and after. Runs the localisation net only,
    without gradients, in eval mode, in batches on the transformer's device; for parallel
    transformers, transformer ``index``.

    Beside the pose statistics, the metrics hold what the output window holds
    (:func:`window_statistics`) and, with the digits' ``labels`` ``(N,)``, the rotation
    undone per class (``rotation_undone_<k>``) and without the digits 0, 1 and 8
    (``rotation_undone_upright``).
    """
    return _measure_digits(transformer, images, (pose,), canvas_size, batch_size, index, labels)[0]


@torch.no_grad()
def _measure_digits(
    transformer: SpatialTransformer,
    images: Tensor,
    poses: Sequence[PoseRecord],
    canvas_size: int | None,
    batch_size: int,
    index: int,
    labels: Tensor | None = None,
) -> list[PoseMeasurement]:
    """:func:`measure_pose` against each of ``poses`` (one record per digit of
    ``images``), from one localisation pass: every digit's corners are located together."""
    canvas = canvas_size or images.shape[-1]
    device = next(transformer.parameters()).device
    # normalised input coordinates, every digit's four corners side by side: (N, 4·D, 2)
    corners = torch.cat([pose.corners.double() for pose in poses], dim=1) * (2.0 / canvas) - 1.0
    output_size = transformer.output_size or images.shape[-1]
    was_training = transformer.training
    transformer.eval()
    try:
        located, windows = [], []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            points = corners[start : start + batch_size].to(device=device, dtype=x.dtype)
            family, theta = transformer.warp_params(x, index)
            located.append(invert_points(family, theta, points).double().cpu())
            part = [pose[start : start + batch_size] for pose in poses]
            windows.append(
                _window_parts(family, theta, x, part, points.double(), output_size, len(poses))
            )
    finally:
        transformer.train(was_training)
    unit = images.shape[-1] / 2
    before, after = corners * unit, torch.cat(located) * unit
    measurements = []
    for j, pose in enumerate(poses):
        digit = slice(4 * j, 4 * j + 4)
        src = box_corners(pose.digit_size, dtype=torch.float64)
        metrics = pose_statistics(src, before[:, digit], after[:, digit])
        window = {key: torch.cat([w[j][key] for w in windows]) for key in windows[0][j]}
        metrics.update(window_statistics(window))
        measurement = PoseMeasurement(metrics, before[:, digit], after[:, digit], pose.digit_size)
        if labels is not None:
            metrics.update(class_rotation(measurement, labels))
        measurements.append(measurement)
    return measurements


def _window_parts(
    family: TransformFamily,
    theta: Tensor,
    images: Tensor,
    poses: list[PoseRecord],
    corners: Tensor,
    output_size: int,
    digits: int,
) -> list[dict[str, Tensor]]:
    """Per-image window figures of one batch, one dict per digit: box coverage ``(B,)``,
    and the digit's and the clutter's ink kept ``(B,)`` where the record says which ink is
    which (or, with one digit and no clutter, all ink is the digit's)."""
    mask = window_mask(family, theta, (images.shape[-2], images.shape[-1]))
    parts = []
    for j, pose in enumerate(poses):
        values = {"zoom": box_coverage(family, theta, corners[:, 4 * j : 4 * j + 4], output_size)}
        digit_ink = pose.digit_ink
        if digit_ink is None and digits == 1:
            digit_ink = images
        for key, ink in (("digit_kept", digit_ink), ("clutter_kept", pose.clutter_ink)):
            if ink is not None:
                values[key] = ink_kept(_at_size(ink, images.shape[-1], mask.device), mask)
        parts.append({key: value.double().cpu() for key, value in values.items()})
    return parts


def _at_size(ink: Tensor, size: int, device: torch.device) -> Tensor:
    """Ink ``(B, C, S, S)`` (``uint8`` or float) as float at ``size`` pixels per side: the
    side of the images the transformer reads (eval resizes other variants' canvases)."""
    ink = ink.to(device=device, dtype=torch.float32)
    if ink.shape[-1] == size:
        return ink
    return F.interpolate(ink, size=(size, size), mode="bilinear", antialias=True)


def window_statistics(values: dict[str, Tensor]) -> dict[str, float | None]:
    """The set's :data:`WINDOW_METRICS` from per-image values ``(N,)``: the mean (and for
    ``zoom`` the std) over the images; ``None`` for a figure without values (no clutter).
    Images without ink of a kind (NaN) are left out of its mean.

    >>> window_statistics({"zoom": torch.tensor([0.5, 1.0])})["zoom_std"]
    0.25
    """
    zoom = values["zoom"]
    stats: dict[str, float | None] = {
        "zoom": float(zoom.mean()),
        "zoom_std": float(zoom.std(unbiased=False)),
    }
    for key in ("digit_kept", "clutter_kept"):
        kept = values.get(key)
        stats[key] = None if kept is None else float(kept.nanmean())
    return stats


def class_rotation(measurement: PoseMeasurement, labels: Tensor) -> dict[str, float | None]:
    """Rotation undone (:func:`~stnlab.geometry.rotation_undone`) per digit class,
    ``rotation_undone_<k>`` for k = 0…9 (``None`` for a class with no digits), and over
    the digits other than 0, 1 and 8 (:data:`UPRIGHT_EXCLUDED`), whose upright pose is
    not defined: ``rotation_undone_upright``."""
    before = measurement.residual_pose("before")[0]
    after = measurement.residual_pose("after")[0]
    labels = labels[: len(before)].cpu()
    stats: dict[str, float | None] = {}
    for k, key in enumerate(CLASS_ROTATION):
        chosen = labels == k
        stats[key] = rotation_undone(before[chosen], after[chosen]) if chosen.any() else None
    upright = ~torch.isin(labels, torch.tensor(UPRIGHT_EXCLUDED))
    stats["rotation_undone_upright"] = (
        rotation_undone(before[upright], after[upright]) if upright.any() else None
    )
    return stats


@dataclasses.dataclass
class PoseMatching:
    """Pose recovery of every parallel transformer against every digit of the images.

    Attributes:
        pairs: ``(transformer, digit) → PoseMeasurement`` for every pair (0-based).
        matched: the one-to-one pairs with the largest total ``undone`` (each transformer
            with the digit it took; with one transformer and one digit, ``[(0, 0)]``).
    """

    pairs: dict[tuple[int, int], PoseMeasurement]
    matched: list[tuple[int, int]]

    @property
    def metrics(self) -> dict[str, float]:
        """The pose statistics of the matched pairs, averaged over them."""
        chosen = [self.pairs[pair].metrics for pair in self.matched]
        return {key: _mean([m[key] for m in chosen]) for key in chosen[0]}

    @property
    def first(self) -> PoseMeasurement:
        """The measurement of the first matched pair (transformer 1 and its digit)."""
        return self.pairs[self.matched[0]]

    def logged(self) -> dict[str, float]:
        """What is logged as ``val/pose/<key>``: :func:`logged_statistics` of
        :attr:`metrics`, and with several transformers or digits ``undone_t<k>_d<j>`` for
        every pair (1-based: transformer k against digit j)."""
        values = logged_statistics(self.metrics)
        if len(self.pairs) > 1:
            for (k, j), measurement in self.pairs.items():
                values[f"undone_t{k + 1}_d{j + 1}"] = measurement.metrics["undone"]
        return values


def _mean(values: list[float | None]) -> float | None:
    """The mean of one figure over matched pairs; ``None`` where a pair has none."""
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def best_matching(undone: dict[tuple[int, int], float]) -> list[tuple[int, int]]:
    """The one-to-one (transformer, digit) pairs with the largest total ``undone``; pairs
    with a NaN count as the worst.

    >>> best_matching({(0, 0): 0.1, (0, 1): 0.8, (1, 0): 0.7, (1, 1): 0.2})
    [(0, 1), (1, 0)]
    >>> best_matching({(0, 0): 0.1, (0, 1): 0.5})
    [(0, 1)]
    """
    transformers = sorted({k for k, _ in undone})
    digits = sorted({j for _, j in undone})

    def score(pairs: list[tuple[int, int]]) -> float:
        values = [undone[p] for p in pairs]
        return sum(-1e9 if math.isnan(v) else v for v in values)

    if len(transformers) <= len(digits):
        options = [
            list(zip(transformers, chosen, strict=True))
            for chosen in itertools.permutations(digits, len(transformers))
        ]
    else:
        options = [
            sorted(zip(chosen, digits, strict=True))
            for chosen in itertools.permutations(transformers, len(digits))
        ]
    return max(options, key=score)


def match_poses(
    transformer: SpatialTransformer,
    images: Tensor,
    poses: tuple[PoseRecord, ...],
    canvas_size: int | None = None,
    batch_size: int = 1000,
    labels: Tensor | None = None,
) -> PoseMatching:
    """:func:`measure_pose` of each parallel transformer against each digit's ``poses``
    (one record per digit of ``images`` ``(N, C, S, S)``), and the best one-to-one
    matching of transformers to digits. Class ``labels`` ``(N,)`` of single-digit images
    add the rotation undone per class (other targets, such as boxes, are ignored)."""
    copies = getattr(transformer, "num_transformers", 1)
    # class labels of single-digit images only (not sums of two digits, not boxes)
    single = len(poses) == 1 and labels is not None and labels.ndim == 1
    digit_labels = labels if single else None
    pairs = {
        (k, j): measurement
        for k in range(copies)
        for j, measurement in enumerate(
            _measure_digits(transformer, images, poses, canvas_size, batch_size, k, digit_labels)
        )
    }
    matched = best_matching({pair: m.metrics["undone"] for pair, m in pairs.items()})
    return PoseMatching(pairs, matched)


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
