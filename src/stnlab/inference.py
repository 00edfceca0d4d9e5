"""A trained model on people's own images, and exported for use without stnlab.

* :func:`load_images` reads a PNG/JPEG file or a folder of them into the model's input
  format (grey or RGB, resized to the model's canvas, bright digit on a dark background);
* :func:`predict` gives classes, probabilities and what the transformer made of each image;
* :func:`export_torchscript` / :func:`export_onnx` / :func:`export_program` write the
  network (transformer included) as a TorchScript, ONNX or ``torch.export`` file and
  check that it reproduces the logits.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from stnlab.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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


def load_image(
    file: Path, channels: int, size: int, invert: str = "auto", image_size: int | None = None
) -> Tensor:
    """One image → ``(C, size, size)`` float in ``[0, 1]``.

    The image is resized to ``image_size`` (the training images' side, e.g. 28 for MNIST;
    default ``size``) and centred on a black canvas of ``size``, so a digit on a large
    RTS or TC canvas has the size the model was trained on. ``invert``: ``auto`` turns
    dark-on-light grey images (a bright border, as scans and drawings usually are) into
    light-on-dark like MNIST, and leaves colour images alone; ``true`` / ``false`` force it.
    """
    if invert not in ("auto", "true", "false", True, False):
        raise ConfigError(f"invert={invert!r}; valid: auto, true, false")
    side = min(image_size or size, size)
    try:
        with Image.open(file) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((side, side), Image.BILINEAR)
            array = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ConfigError(f"cannot read {file} as an image ({err})") from None
    x = torch.from_numpy(array)
    x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
    if invert == "auto":
        border = torch.cat((x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]), dim=-1)
        flip = channels == 1 and bool(border.mean() > 0.5)
    else:
        flip = invert in ("true", True)
    x = 1.0 - x if flip else x
    if side == size:
        return x
    canvas = torch.zeros(x.shape[0], size, size)
    top = (size - side) // 2
    canvas[:, top : top + side, top : top + side] = x
    return canvas


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
    transformed = None
    if getattr(net, "transformer", None) is not None and net.transformer_at == "input":
        transformed = net.transform(images)[:, : images.shape[1]]
    return logits, logits.softmax(1), transformed


def write_predictions(
    files: list[Path],
    images: Tensor,
    probs: Tensor,
    transformed: Tensor | None,
    out_dir: str | Path,
) -> Path:
    """``predictions.csv`` (file, class, probability) and ``<stem>.png`` per image: the
    input beside the transformed image (beside itself for a model without an input
    transformer)."""
    from stnlab.callbacks.transform_grid import make_grid_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "predictions.csv"
    top = probs.max(1)
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "predicted", "probability", "image"])
        for i, file in enumerate(files):
            picture = out / f"{i:04d}_{file.stem}.png"
            after = transformed[i : i + 1] if transformed is not None else images[i : i + 1]
            after = nn.functional.interpolate(after, size=images.shape[-2:], mode="nearest")
            grid = make_grid_image(images[i : i + 1], after, cols=1)
            zoom = max(1, 112 // images.shape[-1])
            Image.fromarray(grid).resize(
                (grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST
            ).save(picture)
            writer.writerow(
                [str(file), int(top.indices[i]), f"{float(top.values[i]):.4f}", picture.name]
            )
    return table


def _check_same(net: nn.Module, exported: Any, example: Tensor, what: str) -> float:
    with torch.inference_mode():
        want = net(example)
        got = exported(example)
    diff = float((want - torch.as_tensor(got)).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"the {what} export gives other logits (max difference {diff:.3g})")
    return diff


def export_torchscript(net: nn.Module, example: Tensor, path: str | Path) -> float:
    """Trace ``net`` on ``example`` ``(B, C, S, S)`` into ``path``; return the largest
    logit difference to the eager network on a fresh batch (must be ≤ 1e-4)."""
    net = net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks; checked below
        traced = torch.jit.trace(net, example, check_trace=False)
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    return _check_same(net, loaded, torch.rand(3, *example.shape[1:]), "TorchScript")


def export_onnx(net: nn.Module, example: Tensor, path: str | Path) -> float:
    """Write ``net`` as ONNX (opset 17, dynamic batch) and check it with onnxruntime.

    Needs the ``onnx``, ``onnxscript`` and ``onnxruntime`` packages (``pip install -e
    ".[export]"``); returns the largest logit difference to the eager network.
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(
            'format=onnx needs onnx, onnxscript and onnxruntime: pip install -e ".[export]"'
        ) from None
    net = net.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: batch}},
            opset_version=17,
            dynamo=True,
            external_data=False,  # one self-contained file
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])

    return _check_same(net, run, torch.rand(3, *example.shape[1:]), "ONNX")


def predict_files(
    ckpt_path: str | Path, source: str | Path, out_dir: str | Path, invert: str = "auto"
) -> list[dict[str, Any]]:
    """Classify the images of ``source`` with a checkpoint; write :func:`write_predictions`'s
    files into ``out_dir``; return one ``{file, predicted, probability}`` per image."""
    from stnlab.checkpoints import load_checkpoint_net

    net, config = load_checkpoint_net(ckpt_path)
    data = config["data"]
    images, files = load_images(
        source,
        int(data["channels"]),
        int(data["canvas_size"]),
        invert,
        int(data.get("image_size", data["canvas_size"])),
    )
    _, probs, transformed = predict(net, images)
    write_predictions(files, images, probs, transformed, out_dir)
    top = probs.max(1)
    return [
        {"file": str(f), "predicted": int(c), "probability": float(p)}
        for f, c, p in zip(files, top.indices, top.values, strict=True)
    ]


def export_program(net: nn.Module, example: Tensor, path: str | Path) -> float:
    """Save ``net`` as a ``torch.export`` program (``.pt2``, dynamic batch), the format
    PyTorch recommends now that TorchScript is deprecated; load it with
    ``torch.export.load(path).module()``. Returns the largest logit difference."""
    net = net.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
    return _check_same(net, loaded, torch.rand(3, *example.shape[1:]), "torch.export")


EXPORTERS = {
    "torchscript": (export_torchscript, ".pt"),
    "onnx": (export_onnx, ".onnx"),
    "pt2": (export_program, ".pt2"),
}


def export_checkpoint(
    ckpt_path: str | Path, fmt: str, out_dir: str | Path, output: str | Path | None = None
) -> tuple[Path, float]:
    """Export a checkpoint's network as ``fmt`` (``torchscript`` | ``onnx`` | ``pt2``).

    The file goes to ``output`` or ``<out_dir>/model.<pt|onnx|pt2>``; returns it and the largest
    logit difference to the eager network. The exported model takes ``(B, C, S, S)``
    images in ``[0, 1]`` (normalisation is inside) and returns logits ``(B, K)``.
    """
    from stnlab.checkpoints import load_checkpoint_net

    if fmt not in EXPORTERS:
        raise ConfigError(f"format={fmt!r} is unknown; valid: {list(EXPORTERS)}")
    exporter, suffix = EXPORTERS[fmt]
    net, config = load_checkpoint_net(ckpt_path)
    data = config["data"]
    size, channels = int(data["canvas_size"]), int(data["channels"])
    target = Path(output) if output else Path(out_dir) / f"model{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    diff = exporter(net, torch.rand(2, channels, size, size), target)
    return target, diff
