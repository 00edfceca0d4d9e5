"""One checkpoint on every distortion: the rows of ``results.csv`` / ``results.md``.

Each variant's fixed test set is rendered exactly as training runs render theirs (the
checkpoint's ``data.eval_seed``), so the checkpoint's own row equals its run's
``test/err``. Other variants come from ``conf/data/<variant>.yaml`` with the checkpoint's
image source (MNIST, Fashion-MNIST, …). A variant whose canvas differs from the model's
input is only evaluated when asked (``variants=all``), resized bilinearly to the input.

For a model with a spatial transformer on its input, every row also says how much of the
test digits' pose spread the transformer removes (``pose_undone``) and the spread of the
residual angle, log-scale and shift before and after it (``pose_*_before|after``; see
:mod:`stnlab.geometry.pose`); those columns are empty for other models.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from stnlab.analysis.paper import (
    COLUMN_ORDER,
    dataset_label,
    model_label,
    paper_error,
)
from stnlab.analysis.tables import output_files, write_csv
from stnlab.checkpoints import build_from_data, load_checkpoint_net, run_source, run_variant
from stnlab.config import compose_config, data_variants
from stnlab.data.sources import DATASETS
from stnlab.errors import ConfigError
from stnlab.geometry import PoseRecord
from stnlab.models.pose_recovery import LOGGED as POSE_STATISTICS
from stnlab.models.pose_recovery import logged_statistics, match_poses
from stnlab.progress import track
from stnlab.temp_files import write_text

log = logging.getLogger(__name__)

POSE_FIELDS = [f"pose_{key}" for key in POSE_STATISTICS]
"""``pose_undone``, ``pose_angle_std_before``, … (empty without an input transformer)."""

FIELDS = [
    "model",
    "variant",
    "column",
    "own",
    "canvas",
    "resized",
    "samples",
    "errors",
    "error_pct",
    "paper_pct",
    *POSE_FIELDS,
]


def compose_variant(variant: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/train.yaml`` composed with ``data=<variant>`` (inside a Hydra app or not)."""
    if variant not in data_variants():
        raise ConfigError(f"variant {variant!r} is unknown; valid: {data_variants()}")
    return compose_config("train", [f"data={variant}", *overrides])


def variant_data_config(
    variant: str, run_config: dict[str, Any], data_dir: str | Path
) -> dict[str, Any]:
    """The resolved data config of ``variant`` for a checkpoint's run.

    Keeps the run's image source and fixed-set seed (``eval_seed``) so rows compare with
    the run's own ``test/err``.
    """
    data = run_config["data"]
    source = run_source(run_config)
    if source not in DATASETS:
        raise ConfigError(
            f"the checkpoint's data.source={source!r} is unknown; valid: {list(DATASETS)}"
        )
    cfg = compose_variant(variant, [f"data/source={source}"])
    with open_dict(cfg):
        cfg.data.root = str(data_dir)
        cfg.seed = int(data.get("seed", 0))
        cfg.data.eval_seed = int(data.get("eval_seed", 1234))
    return OmegaConf.to_container(cfg.data, resolve=True)  # type: ignore[return-value]


def fixed_test_set(
    data_config: dict[str, Any], allow_fetch: bool = True
) -> tuple[Tensor, Tensor, tuple[PoseRecord, ...] | None]:
    """The fixed test set of a data config: canvases ``(N, C, S, S)`` in ``[0, 1]``, labels
    ``(N,)`` and the applied pose of each digit of the images, one record per digit
    (``None`` for a distortion that keeps none).

    ``data_config`` may come from a checkpoint: it is built with
    :func:`~stnlab.checkpoints.build_from_data` (allow-listed classes, nothing resolved).
    """
    datamodule = build_from_data({**data_config, "allow_fetch": allow_fetch}, "data")
    datamodule.prepare_data()
    images, labels, _ = datamodule.fixed_set("test")
    return images, labels, datamodule.fixed_poses("test")


def render_test_set(data_config: dict[str, Any], allow_fetch: bool = True) -> tuple[Tensor, Tensor]:
    """The canvases and labels of :func:`fixed_test_set`."""
    images, labels, _ = fixed_test_set(data_config, allow_fetch)
    return images, labels


def resize_to_input(images: Tensor, input_size: int, batch_size: int = 2048) -> Tensor:
    """Canvases ``(N, C, S, S)`` resized bilinearly to ``(N, C, input_size, input_size)``."""
    if images.shape[-1] == input_size and images.shape[-2] == input_size:
        return images
    size = (input_size, input_size)
    return torch.cat(
        [
            F.interpolate(
                images[i : i + batch_size], size=size, mode="bilinear", align_corners=False
            )
            for i in range(0, len(images), batch_size)
        ]
    )


@torch.inference_mode()
def predict_labels(
    net: nn.Module,
    images: Tensor,
    input_size: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Predicted classes ``(N,)`` for canvases ``(N, C, S, S)``, resized to ``input_size``."""
    out = []
    for start in range(0, len(images), batch_size):
        x = resize_to_input(images[start : start + batch_size].to(device), input_size)
        out.append(net(x).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def select_variants(
    requested: str | Iterable[str],
    own: str | None,
    canvas: int,
    source: str = "mnist",
    channels: int = 1,
    num_classes: int = 10,
) -> list[str]:
    """Variants to test besides ``own``: ``fitting`` (the model's canvas), ``all``, or a list.

    ``source`` is the image source (``mnist``, ``cifar10`` …), which sets the image size
    and so the canvas of the undistorted variant. Only classification variants with the
    model's ``channels`` and ``num_classes`` can be tested (MNIST addition's two-channel
    sums and the single digits do not mix; co-localisation sets hold boxes, not labels):
    ``fitting`` and ``all`` leave the others out, a list that names one is an error.
    """
    if isinstance(requested, str) and requested in ("fitting", "all"):
        names = data_variants()
    else:
        names = [str(v) for v in ([requested] if isinstance(requested, str) else requested)]
        known = data_variants()
        unknown = [v for v in names if v not in known]
        if unknown:
            raise ConfigError(
                f"variants={unknown} unknown; valid: 'fitting', 'all' or a list of {known}"
            )
    names = [v for v in names if v != own]
    task = (channels, num_classes, True)
    if isinstance(requested, str) and requested in ("fitting", "all"):
        names = [v for v in names if _shape_of(v, source)[1:] == task]
    else:
        other = [v for v in names if _shape_of(v, source)[1:] != task]
        if other:
            raise ConfigError(
                f"variants={other} are not labelled test sets of the model's task "
                f"({channels} channel(s), {num_classes} classes); leave them out"
            )
    if requested == "fitting":
        names = [v for v in names if _shape_of(v, source)[0] == canvas]
    return sorted(names, key=_table_order)


def _table_order(variant: str) -> tuple[int, str]:
    """Undistorted first, then the paper's Table-1 columns, then the others by name."""
    column = dataset_label(variant)
    if variant == "mnist":
        return (0, "")
    if column in COLUMN_ORDER:
        return (1 + COLUMN_ORDER.index(column), "")
    return (1 + len(COLUMN_ORDER), variant)


CLASSIFICATION_DATA = (
    "stnlab.data.datamodule.DigitsDataModule",
    "stnlab.data.addition.AdditionDataModule",
)
"""Data modules whose test sets hold labels that :func:`evaluate_checkpoint` can score."""


@functools.cache
def _shape_of(variant: str, source: str = "mnist") -> tuple[int, int, int, bool]:
    """``(canvas_size, channels, num_classes, labelled)`` of a variant's data config;
    ``labelled``: a classification set (:data:`CLASSIFICATION_DATA`)."""
    data = compose_variant(variant, [f"data/source={source}"]).data
    labelled = data.get("_target_") in CLASSIFICATION_DATA
    return int(data.canvas_size), int(data.channels), int(data.num_classes), labelled


def evaluate_checkpoint(
    ckpt_path: str | Path,
    data_dir: str | Path,
    variants: str | Iterable[str] = "fitting",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    allow_fetch: bool = True,
) -> list[dict[str, Any]]:
    """Test a checkpoint on its own distortion, then on ``variants``; one row per variant.

    Row keys are :data:`FIELDS`; ``error_pct`` is the test error in %, ``paper_pct`` the
    paper's number for this model trained and tested on that variant: on the own row only
    (``None`` elsewhere, and where the paper has none). The pose columns
    (:data:`POSE_FIELDS`) hold the transformer's pose recovery on that test set, ``None``
    for a model without a transformer on its input (and ``pose_undone`` for a set without
    pose spread, such as plain MNIST).
    """
    net, run_config = load_checkpoint_net(ckpt_path)
    net.to(device)
    own_data = {**run_config["data"], "root": str(data_dir)}
    own = run_variant(run_config, Path(ckpt_path).resolve().parents[1])
    if own is None:
        log.warning("%s does not say which data variant it was trained on", ckpt_path)
    source = run_source(run_config)
    canvas = int(own_data["canvas_size"])
    row_label = model_label(run_config)
    jobs: list[tuple[str, dict[str, Any], bool]] = [(own or "own", own_data, True)]
    task = int(own_data.get("channels", 1)), int(own_data.get("num_classes", 10))
    for variant in select_variants(variants, own, canvas, source, *task):
        jobs.append((variant, variant_data_config(variant, run_config, data_dir), False))
    transformer = getattr(net, "input_transformer", None)
    if transformer is None:
        log.info("pose columns left empty: the model has no spatial transformer on its input")
    rows = []
    for name, data_config, is_own in track(jobs, "eval: variants"):
        images, labels, poses = fixed_test_set(data_config, allow_fetch=allow_fetch)
        inputs = resize_to_input(images, canvas)
        predicted = predict_labels(net, inputs, canvas, batch_size, device)
        errors = int((predicted != labels).sum())
        column = dataset_label(name, source)
        pose_row = dict.fromkeys(POSE_FIELDS)
        if transformer is not None and poses is not None:
            matched = match_poses(
                transformer, inputs, poses, images.shape[-1], batch_size, labels=labels
            )
            kept = logged_statistics(matched.metrics)
            pose_row = {f"pose_{key}": kept.get(key) for key in POSE_STATISTICS}
        rows.append(
            {
                "model": row_label,
                "variant": name,
                "column": column,
                "own": is_own,
                "canvas": int(images.shape[-1]),
                "resized": int(images.shape[-1]) != canvas,
                "samples": len(labels),
                "errors": errors,
                "error_pct": 100.0 * errors / max(1, len(labels)),
                # the paper trained one model per variant: its number only fits the own row
                "paper_pct": paper_error(row_label, column) if is_own else None,
                **pose_row,
            }
        )
        log.info("%s: %.2f%% test error (%d samples)", name, rows[-1]["error_pct"], len(labels))
        if pose_row["pose_undone"] is not None:
            log.info("%s: pose undone %.3f", name, round(pose_row["pose_undone"], 3) + 0.0)
    return rows


def _pose_cells(row: dict[str, Any]) -> list[str]:
    """``pose undone``, ``angle std °`` (before → after), ``rotation undone`` (all digits /
    without 0, 1, 8), ``zoom`` and ``digit / clutter kept`` cells of a results.md row."""
    before, after = row.get("pose_angle_std_before"), row.get("pose_angle_std_after")
    angle = "–" if before is None or after is None else f"{before:.1f} → {after:.1f}"

    def figure(key: str) -> str:
        value = row.get(f"pose_{key}")
        return "–" if value is None else f"{round(value, 3) + 0.0:.3f}"  # no "-0.000"

    return [
        figure("undone"),
        angle,
        f"{figure('rotation_undone')} / {figure('rotation_undone_upright')}",
        figure("zoom"),
        f"{figure('digit_kept')} / {figure('clutter_kept')}",
    ]


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def write_results(rows: list[dict[str, Any]], out_dir: str | Path, title: str) -> list[Path]:
    """Write ``results.csv`` (every field) and ``results.md`` (a readable table: pose
    undone, the angle's circular std before → after, rotation undone, zoom, and the digit's
    and the clutter's ink kept)."""
    csv_path, md_path = output_files(out_dir, "results.csv", "results.md")
    write_csv(csv_path, rows, FIELDS)
    header = [
        "variant",
        "Table 1",
        "trained on",
        "canvas",
        "resized",
        "samples",
        "error %",
        "paper %",
        "pose undone",
        "angle std ° (before → after)",
        "rotation undone (w/o 0, 1, 8)",
        "zoom",
        "digit / clutter kept",
    ]
    keys = ["variant", "column", "own", "canvas", "resized", "samples", "error_pct", "paper_pct"]
    lines = [
        f"# {title}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += [
        "| " + " | ".join([*(_cell(row[k]) for k in keys), *_pose_cells(row)]) + " |"
        for row in rows
    ]
    write_text(md_path, "\n".join(lines) + "\n")
    return [csv_path, md_path]
