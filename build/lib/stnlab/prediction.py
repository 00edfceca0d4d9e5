"""A trained model on people's own images: ``src/predict.py``.

* :func:`load_images` reads a PNG/JPEG file or a folder of them into the model's input
  format (grey or RGB, resized to the model's canvas, bright digit on a dark background);
  16-bit PNGs keep their range and transparent areas are filled in (:func:`read_pixels`);
* :func:`ink_span` finds the images with nothing on them (blank or uniform), which get
  no class rather than a confident guess;
* :func:`predict` gives classes, probabilities and what the transformer made of each
  image; :func:`predict_files` does it all for a checkpoint and writes the results.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from stnlab.checkpoints import load_checkpoint_net
from stnlab.errors import ConfigError
from stnlab.image_grid import side_by_side

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_INK_SPAN = 0.05
"""Brightness span (max - min in [0, 1], about 13 of 255 grey levels) below which a
preprocessed image is blank or uniform: no digit for the model to see."""
NO_INK = "no_ink"  # status of such an image in predictions.csv: no class given
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # RGB → grey, as PIL's "L"


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
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"input={source} holds no PNG or JPEG files")
        return files
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


def load_image(
    file: Path, channels: int, size: int, invert: str = "auto", image_size: int | None = None
) -> Tensor:
    """One image → ``(C, size, size)`` float in ``[0, 1]``.

    The image is read by :func:`read_pixels`, resized to ``image_size`` (the training
    images' side, e.g. 28 for MNIST; default ``size``) and centred on a black canvas of
    ``size``, so a digit on a large RTS or TC canvas has the size the model was trained on.
    ``invert``: ``auto`` turns dark-on-light grey images (a bright border, as scans and
    drawings usually are) into light-on-dark like MNIST, and leaves colour images alone;
    ``true`` / ``false`` force it.
    """
    if invert not in ("auto", "true", "false", True, False):
        raise ConfigError(f"invert={invert!r}; valid: auto, true, false")
    square = _centre(size, image_size)
    side = square.stop - square.start
    try:
        with Image.open(file) as img:
            pixels = read_pixels(img, channels)
    except (UnidentifiedImageError, OSError) as err:
        raise ConfigError(f"cannot read {file} as an image ({err})") from None
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(plane)).resize((side, side), Image.BILINEAR)
        )
        for plane in pixels.transpose(2, 0, 1)
    ]
    x = torch.from_numpy(np.stack(planes)).clamp(0.0, 1.0)
    if invert == "auto":
        border = torch.cat((x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]), dim=-1)
        flip = channels == 1 and bool(border.mean() > 0.5)
    else:
        flip = invert in ("true", True)
    x = 1.0 - x if flip else x
    if side == size:
        return x
    canvas = torch.zeros(x.shape[0], size, size)
    canvas[:, square, square] = x
    return canvas


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
) -> tuple[Tensor, list[Path]]:
    """Images of a file or folder → ``(N, C, size, size)`` in ``[0, 1]`` and their paths
    (each as :func:`load_image` prepares it)."""
    files = image_files(path)
    images = [load_image(f, channels, size, invert, image_size) for f in files]
    return torch.stack(images), files


@torch.inference_mode()
def predict(net: nn.Module, images: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """``images`` ``(N, C, S, S)`` → logits ``(N, K)``, probabilities ``(N, K)`` and the
    transformer's output ``(N, C, S', S')`` (``None`` without an input transformer)."""
    logits = net(images)
    return logits, logits.softmax(1), net.transformed_input(images)


def write_predictions(
    files: list[Path],
    images: Tensor,
    probs: Tensor,
    transformed: Tensor | None,
    out_dir: str | Path,
    inked: Tensor | None = None,
) -> Path:
    """``predictions.csv`` (file, predicted, probability, image, status) and ``<stem>.png``
    per image: the input beside the transformed image (beside itself for a model without
    an input transformer).

    ``inked`` ``(N,)`` bool (default: all true) marks images with something on them; the
    others get status ``no_ink`` and an empty class and probability (their picture is
    still written).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "predictions.csv"
    top = probs.max(1)
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "predicted", "probability", "image", "status"])
        for i, file in enumerate(files):
            picture = out / f"{i:04d}_{file.stem}.png"
            after = transformed[i : i + 1] if transformed is not None else images[i : i + 1]
            after = nn.functional.interpolate(after, size=images.shape[-2:], mode="nearest")
            grid = side_by_side(images[i : i + 1], after, cols=1)
            zoom = max(1, 112 // images.shape[-1])
            Image.fromarray(grid).resize(
                (grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST
            ).save(picture)
            if inked is None or bool(inked[i]):
                answer = [int(top.indices[i]), f"{float(top.values[i]):.4f}", picture.name, "ok"]
            else:
                answer = ["", "", picture.name, NO_INK]
            writer.writerow([str(file), *answer])
    return table


def predict_files(
    ckpt_path: str | Path, source: str | Path, out_dir: str | Path, invert: str = "auto"
) -> list[dict[str, Any]]:
    """Classify the images of ``source`` with a checkpoint; write :func:`write_predictions`'s
    files into ``out_dir``; return one ``{file, predicted, probability, status, ink}`` per
    image. A blank or uniform image (``ink``, its :func:`ink_span`, below
    :data:`MIN_INK_SPAN`) has status ``no_ink`` and ``predicted`` / ``probability``
    ``None``; the others have status ``ok``."""
    net, config = load_checkpoint_net(ckpt_path)
    data = config["data"]
    image_size = int(data.get("image_size", data["canvas_size"]))
    images, files = load_images(
        source, int(data["channels"]), int(data["canvas_size"]), invert, image_size
    )
    _, probs, transformed = predict(net, images)
    spans = ink_span(images, image_size)
    inked = spans >= MIN_INK_SPAN
    write_predictions(files, images, probs, transformed, out_dir, inked)
    top = probs.max(1)
    rows = []
    for i, file in enumerate(files):
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
