"""Normalised sampling grids and the bilinear sampler.

Coordinates are normalised to ``[-1, 1]`` across the image with ``align_corners=False``:
the centre of pixel ``j`` in a row of ``W`` pixels sits at ``x = (2j + 1) / W - 1`` and the
image's outer edges at ``±1``. :data:`ALIGN_CORNERS` is the one place this is decided; every
grid built here and every call of ``grid_sample`` uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from stnlab.geometry.transforms import TransformFamily

ALIGN_CORNERS = False


def base_grid(
    height: int,
    width: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Identity sampling grid ``(H, W, 2)`` holding ``(x, y)`` of every output pixel centre.

    >>> base_grid(1, 2)
    tensor([[[-0.5000,  0.0000],
             [ 0.5000,  0.0000]]])
    """
    xs = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1)


def sample(
    images: Tensor,
    grid: Tensor,
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> Tensor:
    """Read ``images`` ``(B, C, H_in, W_in)`` at ``grid`` ``(B, H, W, 2)`` → ``(B, C, H, W)``.

    Points outside the image read as zero (``padding_mode="zeros"``), which is the
    background when images are in ``[0, 1]`` with a black background.
    """
    if grid.dtype != images.dtype:
        grid = grid.to(images.dtype)
    return F.grid_sample(
        images, grid, mode=mode, padding_mode=padding_mode, align_corners=ALIGN_CORNERS
    )


def warp(
    images: Tensor,
    family: TransformFamily,
    theta: Tensor,
    size: tuple[int, int] | None = None,
    *,
    padding_mode: str = "zeros",
) -> Tensor:
    """Warp ``images`` ``(B, C, H_in, W_in)`` by ``theta`` ``(B, P)`` of ``family``.

    Returns ``(B, C, H, W)`` with ``(H, W) = size`` (default: the input size).
    """
    if size is None:
        size = (images.shape[-2], images.shape[-1])
    grid = family.grid(theta, size)
    return sample(images, grid, padding_mode=padding_mode)


def grid_coverage(grid: Tensor) -> Tensor:
    """Fraction of output pixels whose sampling point lies inside the input: ``(B,)``.

    ``grid`` is ``(B, H, W, 2)`` in normalised coordinates. 1 means the output shows input
    everywhere (zooming in, or the identity); near 0 means the output is almost all
    padding, the signature of a transformer that zoomed or slid its input out of view.
    """
    inside = (grid.detach().abs() <= 1.0).all(dim=-1)
    return inside.flatten(1).float().mean(dim=1)
