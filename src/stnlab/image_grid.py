"""Images tiled into one picture for people to look at: transform grids and their
evolution over training, prediction pictures, the sample gallery, matplotlib figures.

Tiling is torchvision's ``make_grid``. Pictures come out as ``uint8`` arrays
``(H, W, 3)``: W&B stores a float image as an all-black PNG, and :func:`check_picture` is
the one check every logged picture passes. Plain torch, no Lightning, so callbacks,
inference and analysis can all draw with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid

PAD = 2  # pixels around and between cells
PAD_VALUE = 0.5  # gray


# Colours of the two channels of a two-digit image (MNIST addition): orange and blue add
# up to white where both digits have ink.
CHANNEL_COLOURS = ((1.0, 0.5, 0.0), (0.0, 0.5, 1.0))


def to_rgb(images: Tensor) -> Tensor:
    """``(N, C, H, W)`` in ``[0, 1]`` → ``(N, 3, H, W)``: one channel as grey, three as
    they are, two (a digit in each) as orange and blue, white where both have ink.

    >>> to_rgb(torch.ones(1, 2, 1, 1)).flatten().tolist()
    [1.0, 1.0, 1.0]
    >>> to_rgb(torch.tensor([[[[1.0]], [[0.0]]]])).flatten().tolist()
    [1.0, 0.5, 0.0]
    """
    channels = images.shape[1]
    if channels == 3:
        return images
    if channels == 1:
        return images.expand(-1, 3, -1, -1)
    if channels == 2:
        colours = torch.tensor(CHANNEL_COLOURS, dtype=images.dtype, device=images.device)
        return torch.einsum("nchw,cr->nrhw", images, colours).clamp(0, 1)
    raise ValueError(f"cannot show images of {channels} channels (1, 2 or 3)")


BOX_COLOURS = {
    "found": (1.0, 0.25, 0.25),
    "true": (0.2, 0.9, 0.2),
    "window": (0.25, 0.6, 1.0),
}
"""Outline colours: the box a model found (red), the true box (green), and the window a
transformer reads onto its output (blue)."""


def draw_boxes(
    images: Tensor, boxes: Tensor, colour: tuple[float, float, float] = BOX_COLOURS["found"]
) -> Tensor:
    """Outline one box per image: ``images`` ``(N, C, H, W)`` in ``[0, 1]`` (C = 1, 2 or
    3), ``boxes`` ``(N, 4)`` ``(x0, y0, x1, y1)`` in pixels (edges, as
    :func:`stnlab.geometry.box_iou` takes them) → ``(N, 3, H, W)`` with a one-pixel
    ``colour`` line on the box's border pixels, clipped to the image.

    >>> out = draw_boxes(torch.zeros(1, 1, 5, 5), torch.tensor([[1.0, 1.0, 4.0, 4.0]]))
    >>> out[0, 0].tolist()[0], out[0, 0].tolist()[2]  # red channel: row 0 clear, row 2 sides
    ([0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0, 0.0])
    """
    rgb = to_rgb(images.detach().float().cpu())
    _, _, height, width = rgb.shape
    b = boxes.detach().float().cpu().round()
    # edges → the border pixels torchvision outlines (inclusive), clipped to the image
    x0, y0 = b[:, 0].clamp(0, width - 1), b[:, 1].clamp(0, height - 1)
    x1 = torch.maximum((b[:, 2] - 1).clamp(0, width - 1), x0)
    y1 = torch.maximum((b[:, 3] - 1).clamp(0, height - 1), y0)
    inclusive = torch.stack((x0, y0, x1, y1), dim=1)
    paint = [tuple(round(255 * c) for c in colour)]
    drawn = [
        draw_bounding_boxes(image, box[None], colors=paint, width=1)
        for image, box in zip(to_bytes(rgb), inclusive, strict=True)
    ]
    return torch.stack(drawn).float() / 255


def draw_quads(
    images: Tensor, quads: Tensor, colour: tuple[float, float, float] = BOX_COLOURS["window"]
) -> Tensor:
    """Outline one quadrilateral per image: ``images`` ``(N, C, H, W)`` in ``[0, 1]``,
    ``quads`` ``(N, 4, 2)`` corner points ``(x, y)`` in pixels (edges: ``(0, 0)`` is the
    image's top-left corner) → ``(N, 3, H, W)`` with a one-pixel ``colour`` outline, clipped
    to the image. Corners that are not finite (a degenerate warp) draw nothing.

    >>> square = torch.tensor([[[1.0, 1], [5, 1], [5, 5], [1, 5]]])
    >>> out = draw_quads(torch.zeros(1, 1, 6, 6), square)
    >>> out[0, 2].tolist()[1], out[0, 2].tolist()[2]  # blue: the top edge, then the sides
    ([0.0, 1.0, 1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    """
    rgb = to_rgb(images.detach().float().cpu())
    paint = tuple(round(255 * c) for c in colour)
    drawn = []
    for image, quad in zip(rgb, quads.detach().double().cpu(), strict=True):
        picture = Image.fromarray(to_uint8(image))
        if bool(torch.isfinite(quad).all()):
            # corners on pixel edges → the pixels just inside them (PIL's i is pixel i)
            quad = quad.clamp(-1e4, 1e4)
            inner = quad + 0.5 * torch.sign(quad.mean(0) - quad) - 0.5
            points = [(round(float(x)), round(float(y))) for x, y in inner]
            ImageDraw.Draw(picture).line([*points, points[0]], fill=paint, width=1)
        drawn.append(torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1))
    return torch.stack(drawn).float() / 255


def tile(images: Tensor, cols: int, pad: int = PAD, pad_value: float = PAD_VALUE) -> Tensor:
    """Tile ``images`` ``(N, C, H, W)`` (C = 1, 2 or 3) row by row into ``min(cols, N)``
    columns.

    Returns ``(3, rows·(H+pad)+pad, cols·(W+pad)+pad)``: images go through :func:`to_rgb`,
    cells are framed by ``pad`` pixels of ``pad_value``.

    >>> tile(torch.zeros(5, 1, 4, 4), cols=2).shape  # 3 rows of 2
    torch.Size([3, 20, 14])
    >>> tile(torch.ones(1, 1, 1, 1), cols=1, pad=1, pad_value=0.0)[0]
    tensor([[0., 0., 0.],
            [0., 1., 0.],
            [0., 0., 0.]])
    """
    grid = make_grid(to_rgb(images), nrow=cols, padding=pad, pad_value=pad_value)
    if len(images) == 1:  # make_grid hands a lone image back without its frame
        grid = F.pad(grid, (pad, pad, pad, pad), value=pad_value)
    return grid


def to_uint8(picture: Tensor) -> np.ndarray:
    """``(C, H, W)`` in ``[0, 1]`` → ``uint8`` array ``(H, W, C)`` (clamped, rounded).

    >>> to_uint8(torch.tensor([[[0.0, 0.5, 2.0]]]))[..., 0]
    array([[  0, 128, 255]], dtype=uint8)
    """
    return to_bytes(picture[None])[0].permute(1, 2, 0).numpy()


def to_bytes(images: Tensor) -> Tensor:
    """``(N, C, H, W)`` in ``[0, 1]`` → ``uint8`` on the CPU, for images kept for later
    pictures (a quarter of float32's memory).

    >>> to_bytes(torch.tensor([[[[0.0, 0.5, 1.5]]]]))
    tensor([[[[  0, 128, 255]]]], dtype=torch.uint8)
    """
    return (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def side_by_side(
    inputs: Tensor,
    *outputs: Tensor,
    cols: int | None = None,
    zoom: int = 1,
    titles: Sequence[str] | None = None,
    enlarge: bool = False,
) -> np.ndarray:
    """``inputs`` tiled on the left, each of ``outputs`` tiled the same way to its right
    (one panel per parallel transformer).

    All are ``(N, C, H, W)`` in ``[0, 1]`` (their sizes may differ); ``cols`` defaults to
    ``⌊√N⌋``. White bars split the panels; ``zoom`` repeats every pixel for legibility.
    With ``enlarge``, outputs at most half the inputs' side are enlarged by the whole
    factor that brings them closest to it (nearest neighbour), so a small window's image
    is not a thumbnail. ``titles`` (one per panel) are written in a strip above the
    panels. Returns ``uint8`` ``(H_picture, W_picture, 3)``.

    >>> side_by_side(torch.zeros(4, 1, 5, 5), torch.ones(4, 1, 3, 3)).shape
    (16, 32, 3)
    >>> side_by_side(torch.zeros(4, 2, 5, 5), torch.ones(4, 2, 3, 3), torch.ones(4, 2, 3, 3)).shape
    (16, 48, 3)
    >>> side_by_side(torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 4, 4), enlarge=True).shape
    (22, 48, 3)
    >>> side_by_side(torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8), titles=["in", "out"]).shape
    (34, 48, 3)
    """
    if titles is not None and len(titles) != 1 + len(outputs):
        raise ValueError(f"side_by_side needs one title per panel, got {len(titles)}")
    cols = cols or max(1, math.isqrt(inputs.shape[0]))
    side = inputs.shape[-1]
    shown = [inputs]
    for images in outputs:
        factor = side // images.shape[-1] if enlarge else 1
        if factor >= 2:
            images = images.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
        shown.append(images)
    panels = [tile(images.detach().float().cpu().clamp(0, 1), cols) for images in shown]
    height = max(panel.shape[1] for panel in panels)
    bar = torch.ones(3, height, 4)
    parts = []
    for panel in panels:
        parts += [F.pad(panel, (0, 0, 0, height - panel.shape[1]), value=PAD_VALUE), bar]
    picture = to_uint8(torch.cat(parts[:-1], dim=2))
    if titles is not None:
        strip = np.zeros((TITLE_HEIGHT, picture.shape[1], 3), dtype=np.uint8)
        picture = np.concatenate((strip, picture), axis=0)
    if zoom > 1:
        picture = picture.repeat(zoom, axis=0).repeat(zoom, axis=1)
    left = 0
    for title, panel in zip(titles or [], panels, strict=False):
        size = (TITLE_HEIGHT - 4) * zoom
        picture = write_label(picture, title, ((left + 2) * zoom, zoom), size=size)
        left += panel.shape[2] + bar.shape[2]
    return picture


TITLE_HEIGHT = 12  # pixels of the title strip above side-by-side panels (before zoom)


def check_picture(image: np.ndarray, key: str) -> np.ndarray:
    """``image`` if it is a loggable picture: ``uint8`` ``(H, W, 3)`` and not blank.

    W&B stores float pixels as an all-black PNG and a one-colour picture shows nothing, so
    every picture stnlab logs passes here first. Raises ``ValueError`` naming ``key``.

    >>> check_picture(np.zeros((2, 2, 3), dtype=np.uint8), "grid")
    Traceback (most recent call last):
    ...
    ValueError: picture 'grid' is blank: every pixel is (0, 0, 0)
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"picture {key!r} must be uint8 (H, W, 3), got {image.dtype} {tuple(image.shape)}"
        )
    if image.size == 0 or (image == image[0, 0]).all():
        colour = tuple(int(c) for c in image[0, 0]) if image.size else ()
        raise ValueError(f"picture {key!r} is blank: every pixel is {colour}")
    return image


def figure_pixels(figure: Any) -> np.ndarray:
    """A matplotlib ``Figure`` drawn with the Agg backend → ``uint8`` ``(H, W, 3)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_label(
    picture: np.ndarray, text: str, xy: tuple[int, int], size: int | None = None
) -> np.ndarray:
    """``picture`` ``(H, W, 3)`` ``uint8`` with ``text`` written in white at pixel ``xy``
    (left, top) in PIL's built-in font, ``size`` pixels high (its bitmap size when
    ``None``, or where Pillow has no FreeType); a new array."""
    image = Image.fromarray(picture)
    font = None
    if size is not None:
        try:
            font = ImageFont.load_default(size=size)
        except (ImportError, OSError):  # Pillow without FreeType: the bitmap font
            font = None
    ImageDraw.Draw(image).text(xy, text, fill=(255, 255, 255), font=font)
    return np.asarray(image).copy()


LABEL_HEIGHT = 14  # pixels of the text strip above an evolution picture's columns


def evolution(
    inputs: Tensor, frames: list[tuple[int, Tensor]], zoom: int = 1, max_columns: int = 12
) -> np.ndarray:
    """The same probes through the transformer at several epochs, as one picture.

    ``inputs`` ``(N, C, H, W)`` and each frame's outputs ``(N, C, H', W')`` in ``[0, 1]``
    (``frames`` are ``(epoch, outputs)`` in training order). One row per probe: the input,
    then its transformed image at each epoch (the smaller of the two sizes enlarged by
    nearest neighbour), under a strip naming the epochs. More frames
    than ``max_columns`` are thinned evenly, keeping the first and the last. Returns
    ``uint8`` ``(H_picture, W_picture, 3)``.

    >>> frames = [(e, torch.rand(3, 1, 8, 8)) for e in (1, 2, 3)]
    >>> evolution(torch.rand(3, 1, 8, 8), frames).shape  # 3 rows; input + 3 epochs
    (46, 42, 3)
    """
    if not frames:
        raise ValueError("an evolution picture needs at least one frame")
    if len(frames) > max_columns:
        picks = torch.linspace(0, len(frames) - 1, max_columns).round().long().unique()
        frames = [frames[int(i)] for i in picks]
    size = max(inputs.shape[-1], frames[0][1].shape[-1])  # the smaller side is enlarged

    def fit(images: Tensor) -> Tensor:
        images = images.detach().float().cpu().clamp(0, 1)
        if images.shape[-1] == size:
            return images
        return F.interpolate(images, size=(size, size), mode="nearest")

    columns = [fit(inputs)] + [fit(out) for _, out in frames]
    cells = torch.stack(columns, dim=1).flatten(0, 1)  # (N · columns, C, S, S), row by row
    grid = to_uint8(tile(cells, cols=len(columns)))
    strip = np.zeros((LABEL_HEIGHT, grid.shape[1], 3), dtype=np.uint8)
    picture = np.concatenate((strip, grid), axis=0)
    if zoom > 1:
        picture = picture.repeat(zoom, axis=0).repeat(zoom, axis=1)
    step = (size + PAD) * zoom
    labels = ["input"] + [f"ep {epoch}" for epoch, _ in frames]
    for i, label in enumerate(labels):
        picture = write_label(picture, label, (PAD * zoom + i * step, 1))
    return picture
