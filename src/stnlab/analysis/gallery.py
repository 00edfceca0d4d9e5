"""Gallery: one labelled PNG grid of fixed test samples per data variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor


def labelled_grid(
    images: Tensor, labels: Tensor, cols: int = 8, zoom: int = 2, title: str = ""
) -> Image.Image:
    """Tile ``images`` ``(N, C, S, S)`` in ``[0, 1]`` with each label in its cell's corner."""
    n, c, side, _ = images.shape
    rows = -(-n // cols)
    cell, pad, head = side * zoom, 2, 14 if title else 0
    canvas = Image.new("RGB", (cols * (cell + pad) + pad, head + rows * (cell + pad) + pad), "gray")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 1), title, fill="white")
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        array = pixels[i].permute(1, 2, 0).numpy()
        array = np.repeat(array, 3, axis=2) if c == 1 else array
        tile = Image.fromarray(array).resize((cell, cell), Image.NEAREST)
        left, top = pad + k * (cell + pad), head + pad + r * (cell + pad)
        canvas.paste(tile, (left, top))
        draw.text((left + 2, top + 1), str(int(labels[i])), fill=(255, 64, 64))
    return canvas


def write_gallery(
    samples: dict[str, tuple[Tensor, Tensor]], out_dir: str | Path, cols: int = 8
) -> list[Path]:
    """Write ``<out_dir>/<variant>.png`` for each ``variant → (images, labels)``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for variant, (images, labels) in samples.items():
        side = images.shape[-1]
        title = f"{variant}: {side}x{side}, label in red"
        zoom = max(1, 112 // side)
        path = out / f"{variant}.png"
        labelled_grid(images, labels, cols=cols, zoom=zoom, title=title).save(path)
        written.append(path)
    return written
