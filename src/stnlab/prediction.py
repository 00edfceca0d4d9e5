"""A trained model on people's own images: ``src/predict.py``.

* :func:`load_images` reads a PNG/JPEG file or a folder of them into the model's input
  format (grey or RGB, bright digit on a dark background, on the model's canvas);
  16-bit PNGs keep their range and transparent areas are filled in (:func:`read_pixels`);
* framing: ``mnist`` prepares a grey digit as MNIST's were made (:func:`mnist_frame`:
  cropped to its ink, fitted into 20×20 keeping its aspect, centre of mass at the centre
  of 28×28); ``resize`` stretches the whole image to 28×28. Either way the 28×28 frame
  goes onto the canvas as the data puts an undistorted digit there (:func:`place_on_canvas`);
* :func:`ink_span` finds the images with nothing on them (blank or uniform), which get
  no class rather than a confident guess;
* :func:`predict` gives classes, probabilities and what the transformer made of each
  image; :func:`predict_files` does it all for a checkpoint, a batch at a time, and
  writes the results.
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from stnlab.checkpoints import load_checkpoint_net, run_source, run_variant
from stnlab.checks import check_range
from stnlab.data.distortions import RandomSimilarity
from stnlab.errors import ConfigError
from stnlab.image_grid import side_by_side
from stnlab.temp_files import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_INK_SPAN = 0.05
"""Brightness span (max - min in [0, 1], about 13 of 255 grey levels) below which a
preprocessed image is blank or uniform: no digit for the model to see."""
NO_INK = "no_ink"  # status of such an image in predictions.csv: no class given
UNREADABLE = "unreadable"  # status of a file that is not an image stnlab can read
log = logging.getLogger(__name__)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # RGB → grey, as PIL's "L"
FRAMINGS = ("auto", "mnist", "resize")  # auto: mnist for MNIST models, resize for others
"""``mnist``: crop to the ink, fit into 20×20, centre of mass at the centre of 28×28
(:func:`mnist_frame`); ``resize``: the whole image stretched to 28×28."""
INVERTS = ("auto", "true", "false")
MNIST_FRAME = 28  # side of an MNIST image
MNIST_BOX = 20  # side of the box MNIST's digits were fitted into, keeping their aspect
INK_LEVEL = 0.5
"""A pixel is ink when it is brighter than the background by this share of the brightest
pixel's lead: the binarised digit whose bounding box NIST's images were cropped to."""


def image_files(path: str | Path) -> list[Path]:
    """The PNG/JPEG files of ``path`` (a file, or a folder: its images sorted by name)."""
    source = Path(path)
    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(
                f"input={source} is not a PNG or JPEG file (suffixes {list(IMAGE_SUFFIXES)})"
            )
        return [source]
    if source.is_dir():
        named = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files = [p for p in named if p.is_file()]
        for other in sorted(set(named) - set(files)):  # a FIFO or device would block reads
            log.warning("skipped %s: not a regular file", other)
        if not files:
            raise ConfigError(f"input={source} holds no PNG or JPEG files")
        return files
    if source.exists():
        raise ConfigError(
            f"input={source} is not a regular file or a folder (a FIFO or a device); "
            "give an image file or a folder of them"
        )
    raise ConfigError(f"input={source} does not exist; give an image file or a folder of them")


def transparent_background(colour: np.ndarray, alpha: np.ndarray) -> float:
    """What transparent pixels become: 1.0 (white) or 0.0 (black).

    ``colour`` ``(H, W, C)`` and ``alpha`` ``(H, W)`` in [0, 1]. White, as paper or an image
    viewer shows it, so dark ink on a transparent canvas comes out dark-on-light and
    ``invert=auto`` turns it into MNIST's light-on-dark. When every visible pixel has the
    same light colour, the digit is drawn in the alpha channel alone (white strokes on a
    transparent canvas): then black, as white would make the digit vanish.
    """
    grey = colour @ LUMA if colour.shape[-1] == 3 else colour[..., 0]
    weight = alpha / max(float(alpha.sum()), 1e-6)
    mean = float((weight * grey).sum())
    spread = float(np.sqrt((weight * (grey - mean) ** 2).sum()))
    return 0.0 if mean > 0.5 and spread < 0.1 else 1.0


def read_pixels(img: Image.Image, channels: int) -> np.ndarray:
    """An opened image → ``(H, W, channels)`` float in [0, 1], grey or RGB.

    16-bit grey PNGs (PIL modes ``I;16``, ``I;16B``, ``I``) are scaled by 65535 rather than
    clipped at 255; images with transparency (``LA``, ``RGBA``, ``P`` or grey with a
    transparent colour) are composited onto :func:`transparent_background`.
    """
    alpha = None
    if img.mode.startswith("I"):
        raw = np.asarray(img).astype(np.float32)
        key = img.info.get("transparency")
        if isinstance(key, int):
            alpha = (raw != key).astype(np.float32)
        colour = np.clip(raw / 65535.0, 0.0, 1.0)[..., None]
    elif img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        colour, alpha = rgba[..., :3], rgba[..., 3]
    else:
        colour = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
        colour = colour.reshape(*colour.shape[:2], -1) / 255.0
    if alpha is not None:
        background = transparent_background(colour, alpha)
        colour = colour * alpha[..., None] + background * (1.0 - alpha[..., None])
    if channels == 1 and colour.shape[-1] == 3:
        colour = (colour @ LUMA)[..., None]
    elif channels == 3 and colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, axis=-1)
    return colour


def _centre(size: int, image_size: int | None) -> slice:
    """Rows (and columns) of the ``image_size`` square centred on a ``size`` canvas."""
    side = min(image_size or size, size)
    top = (size - side) // 2
    return slice(top, top + side)


def check_options(invert: str | bool = "auto", framing: str = "mnist") -> None:
    """Raise :class:`ConfigError` naming ``invert`` or ``framing`` when it is not valid."""
    if invert not in (*INVERTS, True, False):
        raise ConfigError(f"invert={invert!r}; valid: {', '.join(INVERTS)}")
    if framing not in FRAMINGS:
        raise ConfigError(f"framing={framing!r} is unknown; valid: {', '.join(FRAMINGS)}")


def _border(picture: np.ndarray) -> np.ndarray:
    """The outermost pixels of ``picture`` ``(H, W, ...)``: rows 0 and -1, columns 0 and -1."""
    return np.concatenate(
        (picture[0].ravel(), picture[-1].ravel(), picture[:, 0].ravel(), picture[:, -1].ravel())
    )


def ink_box(picture: np.ndarray, background: float) -> tuple[int, int, int, int] | None:
    """The bounding box ``(top, left, bottom, right)`` (half-open, pixels) of the ink of a
    light-on-dark ``picture`` ``(H, W)``; ``None`` when nothing in it is at least
    :data:`MIN_INK_SPAN` brighter than ``background``.

    Ink: pixels brighter than ``background`` by more than :data:`INK_LEVEL` of the
    brightest pixel's lead, so the soft edges of a stroke and faint noise do not widen
    the box.

    >>> picture = np.zeros((6, 8)); picture[1:3, 2:7] = 1.0; picture[3, 4] = 0.3
    >>> ink_box(picture, 0.0), ink_box(np.full((6, 8), 0.5), 0.5)
    ((1, 2, 3, 7), None)
    """
    peak = float(picture.max())
    if peak - background < MIN_INK_SPAN:
        return None
    rows, cols = np.nonzero(picture > background + INK_LEVEL * (peak - background))
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def fit_in_box(
    picture: np.ndarray, box: tuple[int, int, int, int], side: int = MNIST_BOX
) -> np.ndarray:
    """The ``box`` ``(top, left, bottom, right)`` of ``picture`` ``(H, W)`` scaled so that
    its longer side is ``side`` pixels, keeping its aspect → ``(h, w)``, ``max(h, w) ==
    side``, the shorter side rounded to whole pixels (at least 1).

    Bilinear resampling with PIL's antialiasing: a large drawing shrinks without losing
    thin strokes, a small one grows smoothly.

    >>> fit_in_box(np.ones((50, 90)), (10, 0, 40, 90)).shape
    (7, 20)
    """
    top, left, bottom, right = box
    height, width = bottom - top, right - left
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(np.ascontiguousarray(picture, dtype=np.float32))
    return np.asarray(image.resize(size, Image.BILINEAR, box=(left, top, right, bottom)))


def centre_of_mass(picture: np.ndarray) -> tuple[float, float]:
    """``(row, column)`` of the brightness-weighted centre of ``picture`` ``(H, W)``, in
    pixels from its top-left edge (pixel ``i`` spans ``[i, i + 1)``, its centre at
    ``i + 0.5``); the picture's centre when it is all zero.

    >>> centre_of_mass(np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))
    (1.0, 2.5)
    """
    total = float(picture.sum())
    if total <= 0:
        return picture.shape[0] / 2, picture.shape[1] / 2
    rows = np.arange(picture.shape[0]) + 0.5
    cols = np.arange(picture.shape[1]) + 0.5
    return float(picture.sum(1) @ rows) / total, float(picture.sum(0) @ cols) / total


def mnist_frame(picture: np.ndarray, frame: int = MNIST_FRAME) -> np.ndarray | None:
    """A light-on-dark grey ``picture`` ``(H, W)`` in ``[0, 1]`` → ``(frame, frame)`` made
    as MNIST's digits were; ``None`` when it has no ink (:func:`ink_box`).

    The background (the median of the picture's border: paper, whatever the digit's size)
    becomes 0; the digit is cropped to its ink, fitted into a box of ``frame · 20/28``
    pixels keeping its aspect (:func:`fit_in_box`), and placed so that its centre of mass
    lies at the frame's centre, to the nearest whole pixel (at most 0.5 px off; the
    shift is whole so strokes stay as sharp as the fit made them). A digit whose mass sits
    far from its box's centre can be cut at the frame's edge, as in MNIST.
    """
    background = float(np.median(_border(picture)))
    box = ink_box(picture, background)
    if box is None:
        return None
    digit = fit_in_box(
        np.clip(picture - background, 0.0, 1.0), box, round(frame * MNIST_BOX / MNIST_FRAME)
    )
    row, col = centre_of_mass(digit)
    top, left = (math.floor(frame / 2 - c + 0.5) for c in (row, col))
    out = np.zeros((frame, frame), dtype=np.float32)
    height, width = digit.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + height, frame), min(left + width, frame)
    out[r0:r1, c0:c1] = digit[r0 - top : r1 - top, c0 - left : c1 - left]
    return np.clip(out, 0.0, 1.0)


def place_on_canvas(frames: Tensor, canvas_size: int) -> Tensor:
    """Frames ``(N, C, s, s)`` → canvases ``(N, C, S, S)`` with ``S = canvas_size``: upright,
    unscaled, the frame's centre on the canvas's centre, as the data places a digit with
    no distortion (:class:`~stnlab.data.distortions.RandomSimilarity` with no rotation,
    scale 1 and no shift; with ``s == S`` the canvas is the frame, as ``NoDistortion``).

    >>> canvas = place_on_canvas(torch.ones(1, 1, 28, 28), 42)
    >>> canvas.shape, round(canvas[0, 0, 7:35, 7:35].min().item(), 4), round(canvas.sum().item())
    (torch.Size([1, 1, 42, 42]), 1.0, 784)
    """
    n, side = frames.shape[0], frames.shape[-1]
    if side == canvas_size:
        return frames
    upright = RandomSimilarity(canvas_size, max_angle=0.0, max_shift=0.0, digit_size=side)
    params = {"angle": torch.zeros(n), "scale": torch.ones(n), "shift": torch.zeros(n, 2)}
    return upright.render(frames, params).clamp(0.0, 1.0)


def check_image_size(file: Path) -> None:
    """Raise a one-line :class:`~stnlab.errors.ConfigError` when ``file`` cannot be opened
    as an image or has more pixels than Pillow's decompression-bomb limit (read from its
    header only, before any pixel is decoded)."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                too_big = limit is not None and img.size[0] * img.size[1] > limit
    except Image.DecompressionBombError:
        too_big = True
    except (UnidentifiedImageError, OSError) as err:
        reason = " ".join(str(err).split())[:200]
        raise ConfigError(f"cannot read {file} as an image ({reason})") from None
    if too_big:
        raise ConfigError(
            f"{file} has more pixels than Pillow's limit of {limit} (a decompression "
            "bomb?); scale it down first"
        )


def load_image(
    file: Path,
    channels: int,
    size: int,
    invert: str = "auto",
    image_size: int | None = None,
    framing: str = "mnist",
) -> Tensor:
    """One image → ``(C, size, size)`` float in ``[0, 1]``.

    The image is read by :func:`read_pixels` and made light-on-dark: ``invert=auto`` turns
    dark-on-light grey images (a bright border, as scans and drawings usually are) into
    light-on-dark like MNIST, and leaves colour images alone; ``true`` / ``false`` force
    it. ``framing``: ``mnist`` frames the digit in an ``image_size`` square as MNIST's
    were made (:func:`mnist_frame`; grey models only); ``resize`` resizes the whole image to
    ``image_size``. An image without ink (nothing to crop to) is resized either way, so it
    stays blank. The square (the training images' side, e.g. 28 for MNIST; default
    ``size``) goes onto the ``size`` canvas by :func:`place_on_canvas`, so a digit on a
    large RTS or TC canvas has the size the model was trained on. ``auto`` (without a
    checkpoint to ask, see :func:`predict_files`) is ``mnist`` for grey models, ``resize``
    for colour ones.
    """
    check_options(invert, framing)
    if framing == "auto":
        framing = "mnist" if channels == 1 else "resize"
    if framing == "mnist" and channels != 1:
        raise ConfigError(
            f"framing=mnist frames grey digits, but this model takes {channels} channels; "
            "use framing=resize"
        )
    side = min(image_size or size, size)
    try:
        with Image.open(file) as img:
            pixels = read_pixels(img, channels)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as err:
        reason = " ".join(str(err).split())[:200]
        raise ConfigError(f"cannot read {file} as an image ({reason})") from None
    if invert == "auto":
        flip = channels == 1 and bool(_border(pixels).mean() > 0.5)
    else:
        flip = invert in ("true", True)
    pixels = 1.0 - pixels if flip else pixels
    framed = mnist_frame(pixels[..., 0], side) if framing == "mnist" else None
    if framed is not None:
        planes = [framed]
    else:
        planes = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(plane)).resize((side, side), Image.BILINEAR)
            )
            for plane in pixels.transpose(2, 0, 1)
        ]
    x = torch.from_numpy(np.stack(planes)).clamp(0.0, 1.0)
    return place_on_canvas(x[None], size)[0]


def ink_span(images: Tensor, image_size: int | None = None) -> Tensor:
    """``images`` ``(N, C, S, S)`` as :func:`load_images` made them → ``(N,)``: the largest
    brightness span (max - min) of any channel inside the centred ``image_size`` square
    that holds the picture. Below :data:`MIN_INK_SPAN` the image is blank or uniform."""
    square = _centre(images.shape[-1], image_size)
    picture = images[..., square, square]
    return (picture.amax((-2, -1)) - picture.amin((-2, -1))).amax(-1)


def load_images(
    path: str | Path,
    channels: int,
    size: int,
    invert: str = "auto",
    image_size: int | None = None,
    framing: str = "mnist",
) -> tuple[Tensor, list[Path]]:
    """Images of a file or folder → ``(N, C, size, size)`` in ``[0, 1]`` and their paths
    (each as :func:`load_image` prepares it)."""
    files = image_files(path)
    images = [load_image(f, channels, size, invert, image_size, framing) for f in files]
    return torch.stack(images), files


@torch.inference_mode()
def predict(net: nn.Module, images: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """``images`` ``(N, C, S, S)`` → logits ``(N, K)``, probabilities ``(N, K)`` and the
    transformer's output ``(N, C, S', S')`` (``None`` without an input transformer)."""
    logits = net(images)
    return logits, logits.softmax(1), net.transformed_input(images)


PREDICTION_FIELDS = ["file", "predicted", "probability", "image", "status"]


def write_predictions(
    files: list[Path],
    images: Tensor,
    probs: Tensor,
    transformed: Tensor | None,
    out_dir: str | Path,
    inked: Tensor | None = None,
    first: int = 0,
) -> Path:
    """``predictions.csv`` (file, predicted, probability, image, status) and
    ``<number>_<stem>.png`` per image: the input beside the transformed image (beside
    itself for a model without an input transformer).

    ``images`` ``(N, C, S, S)``, ``probs`` ``(N, K)`` and ``transformed`` ``(N, C, S', S')``
    belong to ``files`` (N paths). ``inked`` ``(N,)`` bool (default: all true) marks images
    with something on them; the others get status ``no_ink`` and an empty class and
    probability (their picture is still written). ``first`` is the number of the first
    of ``files`` in the whole run: ``0`` starts a new ``predictions.csv``, a later batch
    (``first > 0``) adds its rows to it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "predictions.csv"
    top = probs.max(1)
    with open(table, "w" if first == 0 else "a", newline="") as f:
        writer = csv.writer(f)
        if first == 0:
            writer.writerow(PREDICTION_FIELDS)
        for i, file in enumerate(files):
            picture = out / f"{first + i:04d}_{file.stem[:100]}.png"  # names stay short enough
            after = transformed[i : i + 1] if transformed is not None else images[i : i + 1]
            after = nn.functional.interpolate(after, size=images.shape[-2:], mode="nearest")
            grid = side_by_side(images[i : i + 1], after, cols=1)
            zoom = max(1, 112 // images.shape[-1])
            with atomic_path(picture, "picture") as tmp:
                Image.fromarray(grid).resize(
                    (grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST
                ).save(tmp)
            if inked is None or bool(inked[i]):
                answer = [int(top.indices[i]), f"{float(top.values[i]):.4f}", picture.name, "ok"]
            else:
                answer = ["", "", picture.name, NO_INK]
            writer.writerow([str(file), *answer])
    return table


def predict_files(
    ckpt_path: str | Path,
    source: str | Path,
    out_dir: str | Path,
    invert: str = "auto",
    framing: str = "auto",
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Classify the images of ``source`` with a checkpoint; write :func:`write_predictions`'s
    files into ``out_dir``; return one ``{file, predicted, probability, status, ink}`` per
    image. A blank or uniform image (``ink``, its :func:`ink_span`, below
    :data:`MIN_INK_SPAN`) has status ``no_ink`` and ``predicted`` / ``probability``
    ``None``; the others have status ``ok``.

    Images are read, classified on ``device`` and written ``batch_size`` at a time, so
    a large folder never sits in memory whole; the answers do not depend on the batch
    size. ``framing=mnist`` is for models trained on MNIST (``data.source=mnist``):
    another source's images were not made that way, so it is refused for them;
    ``framing=auto`` picks ``mnist`` for an MNIST model and ``resize`` for the others.
    """
    check_options(invert, framing)
    check_range("batch_size", batch_size, integer=True, minimum=1)
    net, config = load_checkpoint_net(ckpt_path)
    data = config["data"]
    if run_variant(config) == "addition":
        raise ConfigError(
            f"ckpt_path={ckpt_path} is an MNIST-addition model: it reads two digits as one "
            "two-channel canvas, which predict does not make from image files; evaluate it "
            "with src/eval.py"
        )
    source_name = run_source(config)
    if framing == "auto":
        framing = "mnist" if source_name == "mnist" else "resize"
    if framing == "mnist" and source_name != "mnist":
        raise ConfigError(
            f"framing=mnist frames digits as MNIST's were made, but {ckpt_path} was trained "
            f"on data.source={source_name}; use framing=resize"
        )
    channels, canvas = int(data["channels"]), int(data["canvas_size"])
    image_size = int(data.get("image_size", canvas))
    files, rows = [], []
    for file in image_files(source):  # one line for each file that cannot be read
        try:
            check_image_size(file)
            files.append(file)
        except ConfigError as err:
            log.warning("skipped %s", err)
            rows.append(
                {
                    "file": str(file),
                    "predicted": None,
                    "probability": None,
                    "status": UNREADABLE,
                    "ink": None,
                }
            )
    net.to(device)
    for first in range(0, len(files), batch_size):
        batch = files[first : first + batch_size]
        images = torch.stack(
            [load_image(f, channels, canvas, invert, image_size, framing) for f in batch]
        )
        _, probs, transformed = predict(net, images.to(device))
        probs = probs.cpu()
        transformed = transformed.cpu() if transformed is not None else None
        spans = ink_span(images, image_size)
        inked = spans >= MIN_INK_SPAN
        write_predictions(batch, images, probs, transformed, out_dir, inked, first)
        top = probs.max(1)
        for i, file in enumerate(batch):
            ok = bool(inked[i])
            rows.append(
                {
                    "file": str(file),
                    "predicted": int(top.indices[i]) if ok else None,
                    "probability": float(top.values[i]) if ok else None,
                    "status": "ok" if ok else NO_INK,
                    "ink": float(spans[i]),
                }
            )
    return rows
