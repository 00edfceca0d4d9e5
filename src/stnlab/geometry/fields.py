"""Dense displacement fields: the grid of an elastic warp."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from stnlab.geometry.sampler import base_grid


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
    """Sampling grid ``(B, H, W, 2)`` that reads pixel ``p + d(p)`` for ``d`` ``(B, 2, H, W)``."""
    _, _, height, width = displacement_px.shape
    grid = base_grid(height, width, device=displacement_px.device, dtype=displacement_px.dtype)
    scale = torch.tensor([2.0 / width, 2.0 / height], device=grid.device, dtype=grid.dtype)
    return grid.unsqueeze(0) + displacement_px.permute(0, 2, 3, 1) * scale
