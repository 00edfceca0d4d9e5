"""Tiled pictures: the size of the tiling, where each image lands, uint8 for W&B."""

from __future__ import annotations

import numpy as np
import torch

from stnlab.image_grid import PAD, side_by_side, tile, to_uint8


def _numbered(n: int, side: int) -> torch.Tensor:
    """``n`` one-channel images, image ``i`` filled with ``(i + 1) / 10``."""
    return ((torch.arange(n) + 1) / 10).view(n, 1, 1, 1).expand(n, 1, side, side).clone()


def test_tile_size_and_where_every_image_lands() -> None:
    images = _numbered(7, 5)
    grid = tile(images, cols=3, pad=PAD, pad_value=0.0)
    # 7 images in rows of 3: 3 rows; each cell 5 px plus 2 px of frame
    assert grid.shape == (3, 3 * (5 + PAD) + PAD, 3 * (5 + PAD) + PAD)
    for i in range(7):
        row, col = divmod(i, 3)
        top, left = PAD + row * (5 + PAD), PAD + col * (5 + PAD)
        cell = grid[:, top : top + 5, left : left + 5]
        assert torch.all(cell == (i + 1) / 10), f"image {i} is not in row {row}, column {col}"
    assert int((grid[0] != 0).sum()) == 7 * 5 * 5  # all else (frame, 2 empty cells) is pad


def test_a_lone_image_keeps_its_frame_and_colour_images_their_channels() -> None:
    lone = tile(torch.ones(1, 1, 3, 4), cols=4, pad=1, pad_value=0.5)
    assert lone.shape == (3, 5, 6)
    assert torch.all(lone[:, 1:4, 1:5] == 1) and lone[:, 0].eq(0.5).all()
    rgb = torch.zeros(2, 3, 2, 2)
    rgb[1, 2] = 1.0  # second image: blue
    grid = tile(rgb, cols=2, pad=1, pad_value=0.0)
    assert grid[:, 1:3, 4:6].sum(dim=(1, 2)).tolist() == [0.0, 0.0, 4.0]


def test_to_uint8_clamps_rounds_and_moves_channels_last() -> None:
    picture = torch.tensor([[[-1.0, 0.2, 0.5, 1.5]], [[0.0, 0.0, 1.0, 1.0]]])
    pixels = to_uint8(picture)
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 4, 2)
    assert pixels[0, :, 0].tolist() == [0, 51, 128, 255]


def test_side_by_side_is_uint8_inputs_left_outputs_right() -> None:
    inputs, outputs = torch.zeros(4, 1, 6, 6), torch.ones(4, 1, 3, 3)
    picture = side_by_side(inputs, outputs, zoom=2)
    assert picture.dtype == np.uint8  # W&B saves float images as black PNGs
    left_width = 2 * (6 + PAD) + PAD  # 2 columns of 6 px
    height = left_width  # 2 rows: the taller half sets the height
    right_width = 2 * (3 + PAD) + PAD
    assert picture.shape == (2 * height, 2 * (left_width + 4 + right_width), 3)
    half = picture[::2, ::2]  # undo the zoom
    assert np.all(half[PAD : PAD + 6, PAD : PAD + 6] == 0)  # first input
    assert np.all(half[:, left_width : left_width + 4] == 255)  # the white bar
    right = half[:, left_width + 4 :]
    assert np.all(right[PAD : PAD + 3, PAD : PAD + 3] == 255)  # first output
    assert np.all(right[2 * (3 + PAD) + PAD :] == 128)  # below the shorter half: gray
