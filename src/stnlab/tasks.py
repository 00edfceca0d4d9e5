"""The tasks behind ``src/train.py``, ``src/eval.py`` and ``src/robustness.py``:
instantiate from config, run, write the run folder's files, log, clean up.

Tests call :func:`train` and :func:`evaluate` in-process with a composed config; the entry
points only add ``@hydra.main``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

import stnlab.config  # noqa: F401  (registers the resolvers conf/ uses)
from stnlab.analysis import robustness as robust
from stnlab.analysis.evaluate import evaluate_checkpoint, write_results
from stnlab.analysis.paper import dataset_label, model_label, run_variant
from stnlab.callbacks.bookkeeping import RunBookkeeping, scalar_metrics
from stnlab.callbacks.health import NonFiniteLossGuard
from stnlab.checkpoints import (
    AtomicCheckpointIO,
    check_fits,
    checkpoint_for_run,
    load_checkpoint_net,
    own_last_checkpoint,
)
from stnlab.config_checks import check_finite, check_range, instantiate_checked, validate_config
from stnlab.data.sources import load_split
from stnlab.errors import ConfigError, TerminatedError
from stnlab.launching import install_ddp_relaunch, job_context, tag_sweep_job
from stnlab.loggers import (
    close_wandb,
    keep_csv_history,
    resume_wandb_run,
    settle_wandb_mode,
    start_resumed_wandb,
)
from stnlab.run_folder import RunFolderLock, remove_stale_temp_files, sigterm_raises

log = logging.getLogger(__name__)


def instantiate_dict(cfg: DictConfig | None, what: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a mapping (callbacks, loggers); skip nulls."""
    if cfg is None:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{what} config must be a mapping of name → object, got {type(cfg)}")
    return [
        instantiate_checked(node, f"{what}.{name}")
        for name, node in cfg.items()
        if node is not None and "_target_" in node
    ]


def _checkpoint_to_test(cfg: DictConfig, trainer: L.Trainer, ckpt_path: str | None) -> str | None:
    """This fit's best checkpoint; without training, ``ckpt_path``; else current weights."""
    if not cfg.get("train", True):
        return ckpt_path
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback is not None else ""
    if not best:
        log.warning("no best checkpoint was saved; testing the current weights")
    return best or None


def write_failure(output_dir: Path, err: BaseException) -> None:
    """Record why a run failed in ``<output_dir>/failure.json`` (sweep summaries read it)."""
    record: dict[str, Any] = {"error": type(err).__name__, "message": str(err)}
    if isinstance(err, TerminatedError):
        record["terminated"] = True
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "failure.json").write_text(json.dumps(record, indent=2))
    except OSError:
        log.warning("could not write failure.json in %s", output_dir)


def _terminated(err: BaseException, output_dir: Path, trainer: L.Trainer | None) -> TerminatedError:
    """The SIGTERM message: where it stopped, the last good checkpoint, how to resume."""
    where = f" at global step {trainer.global_step}" if trainer is not None else ""
    last = own_last_checkpoint(output_dir)
    if last is None:
        return TerminatedError(f"terminated by SIGTERM{where}; no checkpoint had been written")
    overrides = ""
    with contextlib.suppress(Exception):
        from hydra.core.hydra_config import HydraConfig

        task = [o for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path=")]
        overrides = " ".join(task) + " "
    return TerminatedError(
        f"terminated by SIGTERM{where}; last good checkpoint: {last}. Resume with: python "
        f"src/train.py {overrides}hydra.run.dir={output_dir} ckpt_path=auto"
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model of ``cfg`` and test the best checkpoint; return the final metrics.

    The config is checked first (:func:`~stnlab.config_checks.validate_config`) and the W&B
    mode settled (:func:`~stnlab.config.settle_wandb_mode`), so a bad value or an
    unreachable W&B server fails before any data or model work. The run holds its folder
    (:class:`~stnlab.run_folder.RunFolderLock`) and removes temporary files a killed run
    left there. Writes ``metrics.json`` in ``cfg.paths.output_dir`` (``failure.json`` when
    the run fails). The W&B run is closed on every exit. ``ckpt_path=auto`` resumes this
    run directory's ``last.ckpt``. SIGTERM ends the run with
    :class:`~stnlab.errors.TerminatedError` (exit status 143).
    """
    output_dir = Path(cfg.paths.output_dir)
    rank = getattr(rank_zero_only, "rank", 0)
    lock = RunFolderLock(output_dir)
    trainer: L.Trainer | None = None
    try:
        with sigterm_raises():
            validate_config(cfg)
            settle_wandb_mode(cfg)
            if rank == 0:
                lock.acquire()
                remove_stale_temp_files(output_dir)
            ckpt_path, checkpoint = checkpoint_for_run(cfg)
            if cfg.get("ckpt_path") == "auto":
                log.info(
                    "ckpt_path=auto: %s",
                    f"resuming {ckpt_path}"
                    if ckpt_path
                    else f"no last.ckpt in {output_dir / 'checkpoints'}; starting afresh",
                )
            resumed_wandb = cfg.get("train", True) and resume_wandb_run(cfg, checkpoint)
            ctx = job_context()
            tag_sweep_job(cfg, ctx)
            if ctx is not None:
                install_ddp_relaunch()
            if cfg.get("seed") is not None:
                L.seed_everything(cfg.seed, workers=True)
            datamodule: L.LightningDataModule = instantiate_checked(cfg.data, "data")
            model: L.LightningModule = instantiate_checked(cfg.model, "model")
            if checkpoint is not None and ckpt_path is not None:
                check_fits(model, checkpoint, ckpt_path, cfg)
            model.run_config = OmegaConf.to_container(cfg, resolve=True)
            bookkeeping = RunBookkeeping()
            callbacks = [
                *instantiate_dict(cfg.get("callbacks"), "callbacks"),
                NonFiniteLossGuard(),
                bookkeeping,
            ]
            loggers = instantiate_dict(cfg.get("logger"), "logger")
            if resumed_wandb:
                loggers = start_resumed_wandb(loggers, cfg)
            if checkpoint is not None and rank == 0:
                keep_csv_history(loggers, int(checkpoint.get("global_step", 0)))
            trainer = instantiate_checked(
                cfg.trainer,
                "trainer",
                callbacks=callbacks,
                logger=loggers or False,
                plugins=[AtomicCheckpointIO()],
            )
            for logger in trainer.loggers:
                logger.log_hyperparams(model.run_config)

            metrics: dict[str, float] = {}
            if cfg.get("train", True):
                trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
                # a finished run resumed: no epoch ran, the fit's metrics are the checkpoint's
                metrics.update(bookkeeping.fit_metrics)
                metrics.update(scalar_metrics(trainer.callback_metrics))
            if cfg.get("test", True):
                ckpt = _checkpoint_to_test(cfg, trainer, ckpt_path)
                trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
                metrics.update(scalar_metrics(trainer.callback_metrics))
                if ckpt:
                    metrics["test_ckpt"] = ckpt  # type: ignore[assignment]
            if trainer.is_global_zero:  # one file per run, whatever the number of processes
                text = json.dumps(metrics, indent=2, sort_keys=True)
                (output_dir / "metrics.json").write_text(text)
                (output_dir / "failure.json").unlink(missing_ok=True)  # a resumed run passed
            return metrics
    except BaseException as err:
        if isinstance(err, TerminatedError | SIGTERMException):
            err = _terminated(err, output_dir, trainer)
        if rank == 0:
            write_failure(output_dir, err)
        if isinstance(err, TerminatedError):
            raise err from None
        raise
    finally:
        close_wandb()
        lock.release()


@contextlib.contextmanager
def recorded_task(output_dir: Path) -> Iterator[None]:
    """Around a task: ``failure.json`` in ``output_dir`` on any failure; W&B closed always."""
    try:
        yield
    except BaseException as err:
        write_failure(output_dir, err)
        raise
    finally:
        close_wandb()


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu`` / ``cuda`` / ``cuda:1`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device={name!r} is not a device; valid: auto, cpu, cuda, cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is available; use device=cpu")
    return device


def log_table(
    loggers: list[Any],
    key: str,
    rows: list[dict[str, Any]],
    metrics: dict[str, float],
    image: Path | None = None,
) -> None:
    """Send scalar ``metrics`` to every logger; ``rows`` (a table) and ``image`` to W&B."""
    for logger in loggers:
        logger.log_metrics(metrics)
        if type(logger).__name__ == "WandbLogger" and rows:
            columns = list(rows[0])
            logger.log_table(key=key, columns=columns, data=[[r[c] for c in columns] for r in rows])
            if image is not None:  # uint8 pixels: W&B saves float images as black PNGs
                from PIL import Image

                pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.uint8)
                logger.log_image(key=f"{key}_plot", images=[pixels])
        logger.save()
        logger.finalize("success")


def evaluate(cfg: DictConfig) -> list[dict[str, Any]]:
    """Test ``cfg.ckpt_path`` on its own distortion and on ``cfg.variants``.

    Writes ``results.csv`` and ``results.md`` in ``cfg.paths.output_dir``, logs
    ``eval/<variant>/err`` and an ``eval/results`` table to the configured loggers, and
    returns the rows (keys: :data:`~stnlab.analysis.evaluate.FIELDS`).
    """
    output_dir = Path(cfg.paths.output_dir)
    with recorded_task(output_dir):
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
        loggers = instantiate_dict(cfg.get("logger"), "logger")
        for logger in loggers:
            logger.log_hyperparams({"ckpt_path": str(cfg.ckpt_path), "model": rows[0]["model"]})
        metrics = {f"eval/{row['variant']}/err": float(row["error_pct"]) for row in rows}
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
            column = dataset_label(variant, config["data"].get("dataset", "mnist"))
            label = f"{model_label(config)} ({column})"
            while label in loaded:
                label += "'"
        loaded[label] = (path, net, config)
    return loaded


def robustness(cfg: DictConfig) -> list[dict[str, Any]]:
    """Error against rotation, scale and shift for every checkpoint of ``cfg.ckpts``.

    Writes ``robustness.csv`` and ``robustness.png`` in ``cfg.paths.output_dir``, logs the
    table, the plot and each curve's mean error, and returns the rows (keys:
    :data:`~stnlab.analysis.robustness.FIELDS`).
    """
    output_dir = Path(cfg.paths.output_dir)
    with recorded_task(output_dir):
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
            datasets.add(config["data"].get("dataset", "mnist"))
        if len(datasets) > 1:
            raise ConfigError(f"the checkpoints were trained on different datasets {datasets}")
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
                raise ConfigError(
                    f"scale.start={spec.start}, scale.stop={stop}: scales must be > 0"
                )
        rows = robust.curves_for_models(
            models, digits, labels, grids, int(cfg.batch_size), device, int(cfg.get("seed") or 0)
        )
        title = f"test error vs pose, {len(labels)} test digits"
        csv_path, png_path = robust.write_curves(rows, output_dir, title)
        log.info("wrote %s and %s", csv_path, png_path)
        metrics = {}
        for label in models:
            for factor in grids:
                errs = [
                    r["error_pct"] for r in rows if r["model"] == label and r["factor"] == factor
                ]
                metrics[f"robustness/{label}/{factor}_mean_err"] = sum(errs) / len(errs)
        loggers = instantiate_dict(cfg.get("logger"), "logger")
        for logger in loggers:
            ckpt_paths = {label: path for label, (path, _, _) in loaded.items()}
            logger.log_hyperparams({"ckpts": ckpt_paths, "num_samples": n})
        log_table(loggers, "robustness", rows, metrics, image=png_path)
        return rows
