"""Images tiled into one picture for people to look at: transform grids, prediction
pictures, the sample gallery.

Tiling is torchvision's ``make_grid``. Pictures come out as ``uint8`` arrays
``(H, W, 3)``: W&B stores a float image as an all-black PNG. Plain torch, no Lightning, so
callbacks, inference and analysis can all draw with it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

PAD = 2  # pixels around and between cells
PAD_VALUE = 0.5  # gray


def tile(images: Tensor, cols: int, pad: int = PAD, pad_value: float = PAD_VALUE) -> Tensor:
    """Tile ``images`` ``(N, C, H, W)`` (C = 1 or 3) row by row into ``min(cols, N)`` columns.

    Returns ``(3, rows·(H+pad)+pad, cols·(W+pad)+pad)``: a one-channel input is repeated to
    three, cells are framed by ``pad`` pixels of ``pad_value``.

    >>> tile(torch.zeros(5, 1, 4, 4), cols=2).shape  # 3 rows of 2
    torch.Size([3, 20, 14])
    >>> tile(torch.ones(1, 1, 1, 1), cols=1, pad=1, pad_value=0.0)[0]
    tensor([[0., 0., 0.],
            [0., 1., 0.],
            [0., 0., 0.]])
    """
    grid = make_grid(images, nrow=cols, padding=pad, pad_value=pad_value)
    if len(images) == 1:  # make_grid hands a lone image back without its frame
        grid = F.pad(grid, (pad, pad, pad, pad), value=pad_value)
    return grid


def to_uint8(picture: Tensor) -> np.ndarray:
    """``(C, H, W)`` in ``[0, 1]`` → ``uint8`` array ``(H, W, C)`` (clamped, rounded).

    >>> to_uint8(torch.tensor([[[0.0, 0.5, 2.0]]]))[..., 0]
    array([[  0, 128, 255]], dtype=uint8)
    """
    pixels = (picture.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).numpy()


def side_by_side(
    inputs: Tensor, outputs: Tensor, cols: int | None = None, zoom: int = 1
) -> np.ndarray:
    """``inputs`` tiled on the left, ``outputs`` tiled the same way on the right.

    Both are ``(N, C, H, W)`` in ``[0, 1]`` (their sizes may differ); ``cols`` defaults to
    ``⌊√N⌋``. A white bar splits the halves; ``zoom`` repeats every pixel for legibility.
    Returns ``uint8`` ``(H_picture, W_picture, 3)``.

    >>> side_by_side(torch.zeros(4, 1, 5, 5), torch.ones(4, 1, 3, 3)).shape
    (16, 32, 3)
    """
    cols = cols or max(1, math.isqrt(inputs.shape[0]))
    left = tile(inputs.detach().float().cpu().clamp(0, 1), cols)
    right = tile(outputs.detach().float().cpu().clamp(0, 1), cols)
    height = max(left.shape[1], right.shape[1])
    left = F.pad(left, (0, 0, 0, height - left.shape[1]), value=PAD_VALUE)
    right = F.pad(right, (0, 0, 0, height - right.shape[1]), value=PAD_VALUE)
    bar = torch.ones(3, height, 4)
    picture = to_uint8(torch.cat((left, bar, right), dim=2))
    return picture.repeat(zoom, axis=0).repeat(zoom, axis=1) if zoom > 1 else picture
