"""Dense displacement fields: the grid of an elastic warp."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from stnlab.geometry.grids import ALIGN_CORNERS, base_grid


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def smooth_displacement(noise: Tensor, sigma: float, alpha: float) -> Tensor:
    """Smooth random displacement in pixels: ``alpha · G_σ * noise``.

    Simard et al. (2003)'s elastic distortion: ``noise`` ``(B, 2, H, W)`` uniform in
    ``[-1, 1]`` is blurred with a Gaussian of ``sigma`` pixels (separable, zero padding)
    and scaled by ``alpha`` pixels. Returns ``(B, 2, H, W)`` = (dx, dy) per pixel.

    >>> noise = torch.ones(1, 2, 9, 9)
    >>> field = smooth_displacement(noise, sigma=1.0, alpha=3.0)
    >>> field.shape, round(field[0, 0, 4, 4].item(), 4)  # the kernel sums to 1: alpha away
    (torch.Size([1, 2, 9, 9]), 3.0)
    """
    kernel = _gaussian_kernel(sigma, noise.device, noise.dtype)
    k = kernel.numel()
    channels = noise.shape[1]
    horizontal = kernel.view(1, 1, 1, k).expand(channels, 1, 1, k)
    vertical = kernel.view(1, 1, k, 1).expand(channels, 1, k, 1)
    flat = F.conv2d(noise, horizontal, padding=(0, k // 2), groups=channels)
    flat = F.conv2d(flat, vertical, padding=(k // 2, 0), groups=channels)
    return alpha * flat


def displacement_grid(displacement_px: Tensor) -> Tensor:
    """Sampling grid ``(B, H, W, 2)`` that reads pixel ``p + d(p)`` for ``d`` ``(B, 2, H, W)``.

    >>> torch.equal(displacement_grid(torch.zeros(1, 2, 3, 4))[0], base_grid(3, 4))
    True
    >>> one_right = torch.zeros(1, 2, 1, 4)
    >>> one_right[:, 0] = 1.0  # every pixel reads its right neighbour: +2/W in x
    >>> displacement_grid(one_right)[0, 0, :, 0]
    tensor([-0.2500,  0.2500,  0.7500,  1.2500])
    """
    _, _, height, width = displacement_px.shape
    grid = base_grid(height, width, device=displacement_px.device, dtype=displacement_px.dtype)
    scale = torch.tensor([2.0 / width, 2.0 / height], device=grid.device, dtype=grid.dtype)
    return grid.unsqueeze(0) + displacement_px.permute(0, 2, 3, 1) * scale


def displacement_preimage(displacement_px: Tensor, targets_px: Tensor, steps: int = 20) -> Tensor:
    """Where input points land under the warp of :func:`displacement_grid`: ``(B, M, 2)``.

    The warp's output pixel ``p`` reads the input at ``p + d(p)``; for input points ``q``
    ``(B, M, 2)`` (pixels, origin at the image's top-left edge) this returns the ``p`` with
    ``p + d(p) = q``, by the fixed-point iteration ``p ← q - d(p)`` with ``d`` ``(B, 2, H,
    W)`` read bilinearly (its edge values beyond the pixel centres). The iteration
    converges when ``d`` varies by less than a pixel per pixel, as smooth elastic fields do.

    >>> shift = torch.ones(1, 2, 4, 4)  # every output pixel reads 1 px right and down
    >>> displacement_preimage(shift, torch.tensor([[[2.0, 2.0]]]))
    tensor([[[1., 1.]]])
    """
    _, _, height, width = displacement_px.shape
    to_norm = torch.tensor([2.0 / width, 2.0 / height], device=targets_px.device)
    to_norm = to_norm.to(targets_px.dtype)
    field = displacement_px.to(targets_px.dtype)
    points = targets_px
    for _ in range(steps):
        grid = (points * to_norm - 1).unsqueeze(1)  # (B, 1, M, 2)
        d = F.grid_sample(field, grid, padding_mode="border", align_corners=ALIGN_CORNERS)
        points = targets_px - d[:, :, 0].transpose(1, 2)
    return points
