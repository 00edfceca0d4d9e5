"""The gallery writes one labelled grid per variant."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from stnlab.analysis.gallery import labelled_grid, write_gallery


def test_write_gallery_one_png_per_variant(tmp_path: Path) -> None:
    samples = {
        "rts": (torch.rand(64, 1, 42, 42), torch.randint(0, 10, (64,))),
        "rgb": (torch.rand(10, 3, 32, 32), torch.randint(0, 10, (10,))),
    }
    paths = write_gallery(samples, tmp_path / "gallery")
    assert [p.name for p in paths] == ["rts.png", "rgb.png"]
    rts = Image.open(paths[0])
    # 8 columns of 42·2 px cells with 2 px gaps, 8 rows below a 14 px title
    assert rts.size == (8 * (84 + 2) + 2, 14 + 8 * (84 + 2) + 2)
    rgb = Image.open(paths[1])
    assert rgb.size[1] == 14 + 2 * (96 + 2) + 2  # 10 images → 2 rows, zoom 3


def test_grid_cells_hold_the_images() -> None:
    images = torch.zeros(2, 1, 4, 4)
    images[1] = 1.0
    grid = labelled_grid(images, torch.tensor([0, 1]), cols=2, zoom=4)
    # bottom-right pixel of each cell (away from the label text)
    assert grid.getpixel((2 + 15, 2 + 15)) == (0, 0, 0)
    assert grid.getpixel((2 + 16 + 2 + 15, 2 + 15)) == (255, 255, 255)
