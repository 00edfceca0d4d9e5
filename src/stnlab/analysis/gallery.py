"""Gallery: one labelled PNG grid of fixed test samples per data variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from stnlab.analysis.tables import output_files
from stnlab.image_grid import PAD, tile, to_rgb, to_uint8
from stnlab.temp_files import atomic_path


def labelled_grid(
    images: Tensor, labels: Tensor, cols: int = 8, zoom: int = 2, title: str = ""
) -> Image.Image:
    """Tile ``images`` ``(N, C, S, S)`` in ``[0, 1]`` (C = 1, 2 or 3: two channels in two
    colours, :func:`~stnlab.image_grid.to_rgb`), each zoomed ``zoom``× with its label in red
    in its corner, under ``title`` (if any)."""
    cells = to_rgb(images.detach().float().cpu().clamp(0, 1))
    cells = cells.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)
    labelled = []
    for cell, label in zip(cells, labels, strict=True):
        picture = Image.fromarray(to_uint8(cell))
        ImageDraw.Draw(picture).text((2, 1), str(int(label)), fill=(255, 64, 64))
        labelled.append(torch.from_numpy(np.array(picture)).permute(2, 0, 1) / 255)
    grid = Image.fromarray(to_uint8(tile(torch.stack(labelled), cols)))
    head = 14 if title else 0
    canvas = Image.new("RGB", (grid.width, head + grid.height), "gray")
    canvas.paste(grid, (0, head))
    if title:
        ImageDraw.Draw(canvas).text((PAD, 1), title, fill="white")
    return canvas


def write_gallery(
    samples: dict[str, tuple[Tensor, Tensor]], out_dir: str | Path, cols: int = 8
) -> list[Path]:
    """Write ``<out_dir>/<variant>.png`` for each ``variant → (images, labels)``."""
    paths = output_files(out_dir, *(f"{variant}.png" for variant in samples))
    for path, (variant, (images, labels)) in zip(paths, samples.items(), strict=True):
        side = images.shape[-1]
        title = f"{variant}: {side}x{side}, label in red"
        zoom = max(1, 112 // side)
        with atomic_path(path, "picture") as tmp:
            labelled_grid(images, labels, cols=cols, zoom=zoom, title=title).save(tmp)
    return list(paths)
