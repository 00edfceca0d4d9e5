"""Measurements of a distortion variant's fixed set: what the canvas edge cuts off, how
much perspective foreshortens, how much clutter there is, how the poses spread.

These are the numbers docs/distortions_vs_paper.md sets beside the paper's description of
each variant; ``python src/gallery.py`` writes them for every variant it draws.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stnlab.geometry import PoseRecord, ProjectiveTransform, box_corners, pixel_matrix, warp
from stnlab.geometry.pose import circular_std, shift_spread, similarity_fit

STATISTICS = (
    "ink_lost_mean",
    "ink_lost_over_10pc",
    "foreshortening_median",
    "foreshortening_over_2",
    "scale_min",
    "scale_max",
    "angle_std",
    "shift_std",
    "clutter_ink",
    "clutter_to_digit_ink",
    "clutter_on_digit",
)
"""The keys of :func:`distortion_statistics`, in the order tables show them."""


def widened_canvas(digits: Tensor, homography: Tensor, canvas_size: int, margin: int) -> Tensor:
    """Draw ``digits`` ``(N, C, h, h)`` in ``[0, 1]`` with their digit-pixel → canvas-pixel
    ``homography`` ``(N, 3, 3)`` on the canvas widened by ``margin`` pixels on every side:
    ``(N, C, S + 2·margin, S + 2·margin)``, the canvas itself in the middle."""
    side = canvas_size + 2 * margin
    dtype = torch.float64
    shift = torch.eye(3, dtype=dtype)
    shift[:2, 2] = -margin
    # wide normalised → wide pixels → canvas pixels → digit pixels → digit normalised
    to_digit = (
        torch.linalg.inv(pixel_matrix(digits.shape[-1], dtype=dtype))
        @ torch.linalg.inv(homography.to(dtype))
        @ shift
        @ pixel_matrix(side, dtype=dtype)
    )
    to_digit = to_digit / to_digit[:, 2:, 2:]
    theta = to_digit.flatten(1)[:, :8].to(digits.dtype)
    return warp(digits, ProjectiveTransform(), theta, (side, side))


def ink_lost(digits: Tensor, pose: PoseRecord, canvas_size: int, margin: int = 28) -> Tensor:
    """The share ``(N,)`` of each digit's ink that lands beyond the canvas edge.

    ``digits`` ``(N, C, h, h)`` in ``[0, 1]`` are drawn with ``pose.homography`` on a canvas
    widened by ``margin`` pixels; the share is the ink outside the canvas over all the ink
    (0 for a digit without ink). NaN everywhere for a record without homographies
    (elastic: the warp is in place).
    """
    if pose.homography is None:
        return torch.full((len(digits),), math.nan)
    wide = widened_canvas(digits, pose.homography, canvas_size, margin)
    inside = wide[..., margin : margin + canvas_size, margin : margin + canvas_size]
    total = wide.sum(dim=(1, 2, 3))
    lost = 1 - inside.sum(dim=(1, 2, 3)) / total.clamp(min=1e-12)
    return torch.where(total > 0, lost.clamp(min=0), torch.zeros_like(lost))


def foreshortening(homography: Tensor, digit_size: int) -> Tensor:
    """How unevenly each homography ``(N, 3, 3)`` (digit pixels → canvas pixels) scales
    the digit's box: the largest local area scale over the smallest, ``(N,)``, 1 for an
    affine map.

    The local area scale of a homography is ``det(H) / w³`` with ``w`` its denominator,
    which is linear in the point, so the extremes lie at the box's corners. A ratio of 2
    means part of the digit is drawn at half the area scale of another part.

    >>> foreshortening(torch.eye(3)[None], 28)
    tensor([1.])
    """
    corners = box_corners(digit_size, centred=False, dtype=torch.float64)
    homog = torch.cat((corners, torch.ones(4, 1, dtype=torch.float64)), dim=1)
    w = (homog @ homography.to(torch.float64).transpose(-1, -2))[..., 2]  # (N, 4)
    ratio = (w.abs().amax(dim=1) / w.abs().amin(dim=1)) ** 3
    return torch.where((w > 0).all(dim=1) | (w < 0).all(dim=1), ratio, math.inf).float()


def distortion_statistics(digits: Tensor, canvases: Tensor, pose: PoseRecord) -> dict[str, float]:
    """Measurements of one fixed set (:data:`STATISTICS`).

    Args:
        digits: ``(N, C, h, h)`` the clean source digits in ``[0, 1]``.
        canvases: ``(N, C, S, S)`` what the distortion made of them.
        pose: their :class:`~stnlab.geometry.PoseRecord`.

    Returns:
        ``ink_lost_mean``: mean share of a digit's ink beyond the canvas edge;
        ``ink_lost_over_10pc``: share of digits losing more than 10% of their ink;
        ``foreshortening_median``, ``foreshortening_over_2``: median of
        :func:`foreshortening` and share of digits above 2; ``scale_min``/``scale_max``:
        the 1st and 99th percentile of the digit's similarity scale (1 = its own size);
        ``angle_std``: circular std of its angle (degrees); ``shift_std``: 2-D std of its
        centre (pixels); ``clutter_ink``: clutter ink per image in full-ink pixels;
        ``clutter_to_digit_ink``: that over the digit's ink; ``clutter_on_digit``: share
        of the digit's ink pixels (> 0.5) that clutter also covers. Values a variant has
        no meaning for are NaN (no homography: elastic; no clutter: all but TC).
    """
    n, size = len(digits), pose.digit_size
    stats = dict.fromkeys(STATISTICS, math.nan)
    lost = ink_lost(digits, pose, canvases.shape[-1])
    if not lost.isnan().all():
        stats["ink_lost_mean"] = float(lost.mean())
        stats["ink_lost_over_10pc"] = float((lost > 0.10).float().mean())
    if pose.homography is not None:
        ratio = foreshortening(pose.homography, size)
        stats["foreshortening_median"] = float(ratio.median())
        stats["foreshortening_over_2"] = float((ratio > 2).float().mean())
    centre = canvases.shape[-1] / 2
    angle, log_scale, shift = similarity_fit(
        box_corners(size, dtype=torch.float64), pose.corners.double() - centre
    )
    scale = log_scale.exp()
    stats["scale_min"] = float(scale.quantile(0.01))
    stats["scale_max"] = float(scale.quantile(0.99))
    stats["angle_std"] = float(circular_std(angle))
    stats["shift_std"] = float(shift_spread(shift))
    if pose.clutter_ink is not None and pose.digit_ink is not None:
        clutter = pose.clutter_ink.float() / 255
        digit = pose.digit_ink.float() / 255
        stats["clutter_ink"] = float(clutter.sum() / n)
        stats["clutter_to_digit_ink"] = float(clutter.sum() / digit.sum())
        covered = (digit > 0.5) & (clutter > 0.5)
        stats["clutter_on_digit"] = float(covered.sum() / (digit > 0.5).sum())
    return stats


def statistics_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table of :func:`distortion_statistics` per variant, ``–`` for NaN."""
    head = "| variant | " + " | ".join(STATISTICS) + " |"
    lines = [head, "|---" * (len(STATISTICS) + 1) + "|"]
    for variant, stats in rows.items():
        cells = ("–" if math.isnan(stats[k]) else f"{stats[k]:.3g}" for k in STATISTICS)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
