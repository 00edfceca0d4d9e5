"""The evaluation tasks: ``src/eval.py`` (one checkpoint on every distortion) and
``src/robustness.py`` (error against rotation, scale and shift)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stnlab.analysis import robustness as robust
from stnlab.analysis.evaluate import evaluate_checkpoint, write_results
from stnlab.analysis.paper import dataset_label, model_label
from stnlab.checkpoints import load_checkpoint_net, run_source, run_variant
from stnlab.checks import check_range
from stnlab.config_checks import check_finite, instantiate_dict
from stnlab.data.sources import load_split
from stnlab.errors import ConfigError
from stnlab.loggers import log_table, settle_wandb_mode, without_unset_wandb_settings
from stnlab.tasks.runner import resolve_device, task

log = logging.getLogger(__name__)


@task()
def evaluate(cfg: DictConfig) -> list[dict[str, Any]]:
    """Test ``cfg.ckpt_path`` on its own distortion and on ``cfg.variants``.

    Writes ``results.csv`` and ``results.md`` in ``cfg.paths.output_dir``, logs
    ``eval/<variant>/err`` and an ``eval/results`` table to the configured loggers, and
    returns the rows (keys: :data:`~stnlab.analysis.evaluate.FIELDS`).
    """
    output_dir = Path(cfg.paths.output_dir)
    settle_wandb_mode(cfg)
    if cfg.get("ckpt_path") in (None, "", "???"):
        raise ConfigError("ckpt_path is required: python src/eval.py ckpt_path=<file.ckpt>")
    check_finite(cfg)
    check_range("batch_size", cfg.get("batch_size", 256), integer=True, minimum=1)
    device = resolve_device(str(cfg.get("device", "auto")))
    variants = cfg.get("variants", "fitting")
    if not isinstance(variants, str):
        variants = list(variants)
    rows = evaluate_checkpoint(
        cfg.ckpt_path,
        cfg.paths.data_dir,
        variants=variants,
        batch_size=int(cfg.get("batch_size", 256)),
        device=device,
        allow_fetch=bool(cfg.get("allow_fetch", True)),
    )
    title = f"{rows[0]['model']}: test error % of {cfg.ckpt_path}"
    written = write_results(rows, output_dir, title)
    log.info("wrote %s", ", ".join(str(p) for p in written))
    print((output_dir / "results.md").read_text())
    loggers = without_unset_wandb_settings(instantiate_dict(cfg.get("logger"), "logger"))
    for logger in loggers:
        logger.log_hyperparams({"ckpt_path": str(cfg.ckpt_path), "model": rows[0]["model"]})
    metrics = {f"eval/{row['variant']}/err": float(row["error_pct"]) for row in rows}
    shown = ("undone", "rotation_undone", "rotation_undone_upright", "zoom")
    shown += ("digit_kept", "clutter_kept")
    for row in rows:  # what the transformer did on each test set, where it applies
        for key in shown:
            if row.get(f"pose_{key}") is not None:
                metrics[f"eval/{row['variant']}/pose_{key}"] = float(row[f"pose_{key}"])
    log_table(loggers, "eval/results", rows, metrics)
    return rows


def _load_labelled(ckpts: Any) -> dict[str, tuple[str, Any, dict[str, Any]]]:
    """``ckpts`` (a mapping label → path, or a list labelled from the runs) loaded once:
    label → (path, network, run config)."""
    if isinstance(ckpts, str):
        ckpts = [ckpts]
    given = isinstance(ckpts, DictConfig | dict)
    pairs = (
        [(str(k), str(v)) for k, v in ckpts.items()] if given else [(None, str(p)) for p in ckpts]
    )
    loaded: dict[str, tuple[str, Any, dict[str, Any]]] = {}
    for label, path in pairs:
        net, config = load_checkpoint_net(path)
        if label is None:
            variant = run_variant(config, Path(path).resolve().parents[1])
            column = dataset_label(variant, run_source(config))
            label = f"{model_label(config)} ({column})"
            while label in loaded:
                label += "'"
        loaded[label] = (path, net, config)
    return loaded


@task()
def robustness(cfg: DictConfig) -> list[dict[str, Any]]:
    """Error against rotation, scale and shift for every checkpoint of ``cfg.ckpts``.

    Writes ``robustness.csv`` and ``robustness.png`` in ``cfg.paths.output_dir``, logs the
    table, the plot and each curve's mean error, and returns the rows (keys:
    :data:`~stnlab.analysis.robustness.FIELDS`).
    """
    output_dir = Path(cfg.paths.output_dir)
    settle_wandb_mode(cfg)
    ckpts = cfg.get("ckpts")
    if ckpts in (None, "", "???") or len(ckpts) == 0:
        raise ConfigError("ckpts is required: python src/robustness.py ckpts=[a.ckpt,b.ckpt]")
    check_finite(cfg)
    for key in ("num_samples", "batch_size"):
        check_range(key, cfg.get(key), integer=True, minimum=1)
    factors = cfg.get("factors", robust.FACTORS)
    factors = [factors] if isinstance(factors, str) else list(factors)
    unknown = [f for f in factors if f not in robust.FACTORS]
    if unknown:
        raise ConfigError(f"factors={unknown} unknown; valid: {list(robust.FACTORS)}")
    device = resolve_device(str(cfg.get("device", "auto")))
    models: dict[str, tuple[Any, int]] = {}
    datasets = set()
    loaded = _load_labelled(ckpts)
    for label, (_, net, config) in loaded.items():
        models[label] = (net.to(device), int(config["data"]["canvas_size"]))
        datasets.add(run_source(config))
    if len(datasets) > 1:
        raise ConfigError(f"the checkpoints were trained on different image sources {datasets}")
    images, labels = load_split(
        cfg.paths.data_dir, datasets.pop(), "test", allow_fetch=bool(cfg.allow_fetch)
    )
    n = int(cfg.num_samples)
    digits = (images[:n].unsqueeze(1) if images.ndim == 3 else images[:n]).float() / 255
    labels = labels[:n]
    grids = {}
    for factor in factors:
        spec = cfg[factor]
        stop = spec.stop
        if factor == "shift" and stop is None:
            largest = max(canvas for _, canvas in models.values())
            stop = max(7.0, (largest - digits.shape[-1]) / 2)
        try:
            grids[factor] = robust.value_grid(float(spec.start), float(stop), int(spec.num))
        except ValueError as err:
            raise ConfigError(f"{factor}: {err}") from None
        if factor == "scale" and min(grids[factor]) <= 0:
            raise ConfigError(f"scale.start={spec.start}, scale.stop={stop}: scales must be > 0")
    rows = robust.curves_for_models(
        models, digits, labels, grids, int(cfg.batch_size), device, int(cfg.get("seed") or 0)
    )
    title = f"test error vs pose, {len(labels)} test digits"
    csv_path, png_path = robust.write_curves(rows, output_dir, title)
    log.info("wrote %s and %s", csv_path, png_path)
    metrics = {}
    for label in models:
        for factor in grids:
            errs = [r["error_pct"] for r in rows if r["model"] == label and r["factor"] == factor]
            metrics[f"robustness/{label}/{factor}_mean_err"] = sum(errs) / len(errs)
    loggers = without_unset_wandb_settings(instantiate_dict(cfg.get("logger"), "logger"))
    for logger in loggers:
        ckpt_paths = {label: path for label, (path, _, _) in loaded.items()}
        logger.log_hyperparams({"ckpts": ckpt_paths, "num_samples": n})
    log_table(loggers, "robustness", rows, metrics, image=png_path)
    return rows
