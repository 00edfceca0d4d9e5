"""Axis-aligned boxes ``(x0, y0, x1, y1)`` in pixels: overlap, and where a warp's output
square lands on its input."""

from __future__ import annotations

import torch
from torch import Tensor

from stnlab.geometry.pose import box_corners, map_points
from stnlab.geometry.transforms import TransformFamily


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of boxes ``(N, 4)`` and ``(N, 4)``, pair by pair: ``(N,)``.

    Boxes are ``(x0, y0, x1, y1)`` with ``x0 <= x1``, ``y0 <= y1``; an empty union gives 0.

    >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2]]))
    tensor([0.3333])
    """
    width = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    height = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def corners_box(corners: Tensor) -> Tensor:
    """The smallest axis-aligned box ``(N, 4)`` holding each set of points ``(N, M, 2)``.

    >>> corners_box(torch.tensor([[[1.0, 5.0], [3.0, 2.0], [2.0, 4.0]]]))
    tensor([[1., 2., 3., 5.]])
    """
    return torch.cat((corners.amin(dim=1), corners.amax(dim=1)), dim=1)


def output_quad(family: TransformFamily, theta: Tensor, input_size: int) -> Tensor:
    """Where the corners of the output square of the warp θ ``(B, P)`` land on a square
    input of ``input_size`` pixels: ``(B, 4, 2)`` (top-left, top-right, bottom-right,
    bottom-left; input pixels, origin at the top-left edge, y down). The window the warp
    reads, turned and sheared as the warp is.

    >>> from stnlab.geometry import AttentionTransform
    >>> output_quad(AttentionTransform(), torch.tensor([[0.5, 0.0, 0.0]]), 8)[0]
    tensor([[2., 2.],
            [6., 2.],
            [6., 6.],
            [2., 6.]])
    """
    unit = box_corners(2.0, dtype=theta.dtype).to(theta.device)  # the output's corners, ±1
    return (map_points(family, theta, unit.expand(len(theta), 4, 2)) + 1) * (input_size / 2)


def output_box(family: TransformFamily, theta: Tensor, input_size: int) -> Tensor:
    """Where the output square of the warp θ ``(B, P)`` lands on a square input of
    ``input_size`` pixels: the box ``(B, 4)`` around its four mapped corners, in input
    pixels (origin at the top-left edge, y down).

    For the attention family (scale ``s``, shift ``t``) this is the square of side
    ``s · input_size`` centred at ``(1 + t) · input_size / 2``.

    >>> from stnlab.geometry import AttentionTransform
    >>> output_box(AttentionTransform(), torch.tensor([[1 / 3, 0.0, -0.5]]), 84)
    tensor([[28.0000,  7.0000, 56.0000, 35.0000]])
    """
    return corners_box(output_quad(family, theta, input_size))
