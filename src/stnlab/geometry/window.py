"""What a transformer's output window holds: how much of it the digit fills (zoom), and
which ink reaches the classifier (digit kept, clutter kept).

The *window* is the part of the input that a warp θ reads onto its output square: the
input points whose inverse image lies in ``[-1, 1]²``. For a transformer that zooms onto
the digit and leaves the clutter out, the digit's box covers most of the output frame, the
digit's ink lies inside the window and the clutter's ink outside it.

Conventions are those of :mod:`stnlab.geometry.pose`: normalised coordinates span
``[-1, 1]`` across an image (``align_corners=False``), points are ``(x, y)``, y down, and a
quad's corners come in the order top-left, top-right, bottom-right, bottom-left.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stnlab.geometry.grids import base_grid
from stnlab.geometry.pose import invert_points, map_points
from stnlab.geometry.transforms import TransformFamily


def inside_quad(points: Tensor, quads: Tensor) -> Tensor:
    """Whether each of ``points`` ``(B, M, 2)`` lies in its convex quad ``(B, 4, 2)``
    (boundary included): ``(B, M)`` bool. The corners may run either way round.

    >>> square = torch.tensor([[[0.0, 0], [2, 0], [2, 2], [0, 2]]])
    >>> inside_quad(torch.tensor([[[1.0, 1.0], [3.0, 1.0], [2.0, 2.0]]]), square)
    tensor([[ True, False,  True]])
    """
    start = quads.unsqueeze(1)  # (B, 1, 4, 2)
    edge = quads.roll(-1, dims=1).unsqueeze(1) - start
    rel = points.unsqueeze(2) - start  # (B, M, 4, 2)
    cross = edge[..., 0] * rel[..., 1] - edge[..., 1] * rel[..., 0]  # (B, M, 4)
    return (cross >= -1e-9).all(-1) | (cross <= 1e-9).all(-1)


def window_mask(family: TransformFamily, theta: Tensor, size: tuple[int, int]) -> Tensor:
    """Which pixels of an input of ``size = (H, W)`` the warp θ ``(B, P)`` reads onto its
    output square: ``(B, H, W)`` bool (pixel centres whose inverse image lies in
    ``[-1, 1]²``). A degenerate warp reads nothing.

    >>> from stnlab.geometry import AttentionTransform
    >>> window_mask(AttentionTransform(), torch.tensor([[0.5, 0.0, 0.0]]), (4, 4))[0].int()
    tensor([[0, 0, 0, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 0, 0, 0]], dtype=torch.int32)
    """
    height, width = size
    centres = base_grid(height, width, device=theta.device, dtype=torch.float64)
    points = centres.view(1, -1, 2).expand(len(theta), -1, -1)
    on_output = invert_points(family, theta, points)
    inside = (on_output.abs() <= 1.0 + 1e-9).all(-1)  # NaN compares False: reads nothing
    return inside.view(len(theta), height, width)


def ink_kept(ink: Tensor, mask: Tensor) -> Tensor:
    """The share of each image's ink ``(B, C, H, W)`` (or ``(B, H, W)``) inside ``mask``
    ``(B, H, W)``: ``(B,)``, NaN for an image without ink.

    >>> ink = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])
    >>> ink_kept(ink, torch.tensor([[[True, False], [True, True]]]))
    tensor([0.2500])
    """
    values = ink.double().reshape(len(ink), -1, *mask.shape[-2:]).sum(1)  # channels summed
    total = values.flatten(1).sum(1)
    kept = (values * mask).flatten(1).sum(1)
    return torch.where(total > 0, kept / total.clamp(min=1e-12), torch.nan).to(ink.dtype)


def box_coverage(
    family: TransformFamily, theta: Tensor, corners: Tensor, output_size: int
) -> Tensor:
    """The fraction of the output frame of the warp θ ``(B, P)`` that the digit's box
    fills: ``(B,)`` in ``[0, 1]``. ``corners`` ``(B, 4, 2)`` is the box on the input in
    normalised coordinates; the frame is sampled at the ``output_size``² pixel centres.

    The identity on a 60-pixel canvas with a 28-pixel digit box gives (28/60)² ≈ 0.22; a
    window twice the box's side, 0.25; a window inside the box, 1.

    >>> from stnlab.geometry import AttentionTransform
    >>> box = torch.tensor([[[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]])
    >>> box_coverage(AttentionTransform(), torch.tensor([[1.0, 0.0, 0.0]]), box, 8)
    tensor([0.2500])
    >>> box_coverage(AttentionTransform(), torch.tensor([[0.5, 0.0, 0.0]]), box, 8)
    tensor([1.])
    """
    frame = base_grid(output_size, output_size, device=theta.device, dtype=torch.float64)
    points = frame.view(1, -1, 2).expand(len(theta), -1, -1)
    on_input = map_points(family, theta.double(), points)
    covered = inside_quad(on_input, corners.to(on_input))
    return covered.double().mean(1).to(corners.dtype)
