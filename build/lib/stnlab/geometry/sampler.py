"""The bilinear sampler: read images at a sampling grid, or at a transform family's θ.

Grids follow the convention of :mod:`stnlab.geometry.grids` (:data:`ALIGN_CORNERS`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from stnlab.geometry.grids import ALIGN_CORNERS
from stnlab.geometry.transforms import TransformFamily


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

    >>> import torch
    >>> from stnlab.geometry.grids import base_grid
    >>> images = torch.arange(6.0).view(1, 1, 2, 3)
    >>> torch.allclose(sample(images, base_grid(2, 3)[None]), images, atol=1e-6)
    True
    >>> sample(images, torch.full((1, 1, 1, 2), 3.0))  # far outside: padding
    tensor([[[[0.]]]])
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

    >>> import torch
    >>> from stnlab.geometry.transforms import TranslationTransform
    >>> images = torch.rand(2, 1, 8, 8)
    >>> family = TranslationTransform()
    >>> same = warp(images, family, family.identity().expand(2, -1))
    >>> bool((same - images).abs().max() < 1e-6)
    True
    >>> warp(images, family, torch.zeros(2, 2), (4, 6)).shape
    torch.Size([2, 1, 4, 6])
    """
    if size is None:
        size = (images.shape[-2], images.shape[-1])
    grid = family.grid(theta, size)
    return sample(images, grid, padding_mode=padding_mode)
