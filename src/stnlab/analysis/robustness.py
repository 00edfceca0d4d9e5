"""Robustness curves: test error against one pose factor at a time.

The clean test digits are placed on each model's own canvas with exactly one factor
changed from the canonical pose (upright, scale 1, centred):

* ``angle``: rotation in degrees (counter-clockwise on screen);
* ``scale``: size relative to the source digit;
* ``shift``: distance in pixels of the digit's centre from the canvas centre, in a
  direction drawn once per digit from a fixed seed (the same for every model and value).

Every model sees the same digits, so the curves compare the models' invariance directly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stnlab.analysis.tables import output_files, write_csv
from stnlab.geometry import AffineTransform, placement_theta, warp
from stnlab.progress import track
from stnlab.temp_files import atomic_path

log = logging.getLogger(__name__)

FACTORS = ("angle", "scale", "shift")
UNITS = {"angle": "rotation (degrees)", "scale": "scale", "shift": "shift (pixels)"}
FIELDS = ["model", "factor", "value", "samples", "errors", "error_pct"]


def place_digits(
    digits: Tensor, factor: str, value: float, canvas_size: int, directions: Tensor
) -> Tensor:
    """Digits ``(N, C, h, w)`` in ``[0, 1]`` → canvases ``(N, C, S, S)`` with one factor set.

    ``directions`` ``(N,)`` are the shift directions in radians (used by ``shift``).
    """
    if factor not in FACTORS:
        raise ValueError(f"factor={factor!r} is unknown; valid: {list(FACTORS)}")
    n = digits.shape[0]
    angle = torch.zeros(n)
    scale = torch.ones(n)
    shift = torch.zeros(n, 2)
    if factor == "angle":
        angle.fill_(float(value))
    elif factor == "scale":
        if value <= 0:
            raise ValueError(f"scale values must be > 0, got {value}")
        scale.fill_(float(value))
    else:
        shift = float(value) * torch.stack((directions.cos(), directions.sin()), dim=1)
    theta = placement_theta(angle, scale, shift, digits.shape[-1], canvas_size)
    return warp(digits, AffineTransform(), theta, (canvas_size, canvas_size))


def shift_directions(n: int, seed: int = 0) -> Tensor:
    """``n`` directions in radians, uniform on the circle, fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=gen) * (2 * math.pi)


@torch.inference_mode()
def robustness_curve(
    net: nn.Module,
    digits: Tensor,
    labels: Tensor,
    factor: str,
    values: Sequence[float],
    canvas_size: int,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Test error of ``net`` on ``digits`` ``(N, C, h, w)`` in ``[0, 1]`` at each value.

    Returns one row per value with the keys of :data:`FIELDS` (``model`` empty).
    """
    directions = shift_directions(len(digits), seed)
    rows = []
    for value in track(values, f"{factor}: values"):
        errors = 0
        for start in range(0, len(digits), batch_size):
            part = slice(start, start + batch_size)
            x = place_digits(digits[part], factor, value, canvas_size, directions[part])
            predicted = net(x.to(device)).argmax(1).cpu()
            errors += int((predicted != labels[part]).sum())
        rows.append(
            {
                "model": "",
                "factor": factor,
                "value": float(value),
                "samples": len(labels),
                "errors": errors,
                "error_pct": 100.0 * errors / max(1, len(labels)),
            }
        )
    return rows


def value_grid(start: float, stop: float, num: int) -> list[float]:
    """``num`` evenly spaced values from ``start`` to ``stop`` (both included), rounded."""
    if num < 2:
        raise ValueError(f"a curve needs at least 2 points, got num={num}")
    return [round(start + (stop - start) * i / (num - 1), 6) for i in range(num)]


def write_curves(
    rows: list[dict[str, Any]], out_dir: str | Path, title: str = ""
) -> tuple[Path, Path]:
    """Write ``robustness.csv`` (one row per model, factor and value) and ``robustness.png``."""
    csv_path, png_path = output_files(out_dir, "robustness.csv", "robustness.png")
    write_csv(csv_path, rows, FIELDS)
    with atomic_path(png_path, "picture") as tmp:
        plot_curves(rows, title).savefig(tmp, dpi=110, bbox_inches="tight")
    return csv_path, png_path


def plot_curves(rows: list[dict[str, Any]], title: str = "") -> Any:
    """A matplotlib figure: one panel per factor, one line per model (error % vs value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factors = [f for f in FACTORS if any(r["factor"] == f for r in rows)]
    fig, axes = plt.subplots(1, len(factors), figsize=(4.6 * len(factors), 3.6), squeeze=False)
    models = list(dict.fromkeys(r["model"] for r in rows))
    for ax, factor in zip(axes[0], factors, strict=True):
        for model in models:
            points = sorted(
                (r["value"], r["error_pct"])
                for r in rows
                if r["factor"] == factor and r["model"] == model
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=model)
        ax.set_xlabel(UNITS[factor])
        ax.set_ylabel("test error %")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def curves_for_models(
    models: Mapping[str, tuple[nn.Module, int]],
    digits: Tensor,
    labels: Tensor,
    grids: Mapping[str, Sequence[float]],
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows for every ``label → (net, canvas_size)`` and every ``factor → values``; a bar
    on a terminal counts the curves."""
    rows = []
    curves = [(label, factor) for label in models for factor in grids]
    for label, factor in track(curves, "robustness: curves"):
        net, canvas = models[label]
        curve = robustness_curve(
            net, digits, labels, factor, grids[factor], canvas, batch_size, device, seed
        )
        rows.extend({**row, "model": label} for row in curve)
        log.info(
            "%s, %s: error %s %%",
            label,
            factor,
            " ".join(f"{r['error_pct']:.1f}" for r in curve),
        )
    return rows
