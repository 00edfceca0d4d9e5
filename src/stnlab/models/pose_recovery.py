"""Pose recovery of a spatial transformer on a set of digits whose poses are known.

The data module keeps, for every fixed validation and test digit, where the distortion put
the digit's box (:class:`~stnlab.geometry.PoseRecord`). :func:`measure_pose` maps those
corners through the inverse of the transformer's warp onto its output and compares the
spread of poses before and after (:func:`~stnlab.geometry.pose_statistics`);
:func:`match_poses` does it for every parallel transformer against every digit of
multi-digit images. The training callback (:mod:`stnlab.callbacks.pose`) and
``src/eval.py`` (:mod:`stnlab.analysis.evaluate`) both measure through here.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stnlab.geometry import (
    POSE_METRICS,
    PoseRecord,
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
from stnlab.models.transformer import SpatialTransformer

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
