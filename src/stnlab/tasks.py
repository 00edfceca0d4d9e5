"""The train task behind ``src/train.py``: instantiate from config, fit, test, clean up.

Tests call :func:`train` in-process with a composed config; the entry point only adds
``@hydra.main``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from stnlab import config as _config  # noqa: F401  (registers resolvers)
from stnlab.checkpoints import AtomicCheckpointIO, check_fits, checkpoint_for_run
from stnlab.launching import install_ddp_relaunch, job_context, tag_sweep_job
from stnlab.validation import instantiate_checked, validate_config

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


def close_wandb() -> None:
    """Finish the active W&B run, if any, so the next job of a multirun gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


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
    record = {"error": type(err).__name__, "message": str(err)}
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "failure.json").write_text(json.dumps(record, indent=2))
    except OSError:
        log.warning("could not write failure.json in %s", output_dir)


def _resume_wandb_run(cfg: DictConfig, checkpoint: dict[str, Any] | None) -> bool:
    """Log into the checkpoint's W&B run (same id) when resuming, unless an id is set."""
    run_id = (checkpoint or {}).get("stnlab_wandb_id")
    node = (cfg.get("logger") or {}).get("wandb")
    if run_id and node is not None and node.get("id") is None:
        with open_dict(cfg):
            node.id = run_id
        log.info("resuming W&B run %s", run_id)
        return True
    return False


def start_resumed_wandb(
    loggers: list[Any], cfg: DictConfig, wait_s: float = 30.0, poll_s: float = 5.0
) -> list[Any]:
    """Open the resumed W&B run now, waiting while a killed process still holds its id.

    W&B answers "run ID … is in use" while another client of the same W&B service still
    holds the run: after ``kill -9`` the dead process's service lingers for a few seconds,
    and a process started from one that ran W&B shares its service (``WANDB_SERVICE``).
    Retry for up to ``wait_s``; if the id is still held, log to a new run (same group and
    tags) rather than fail the resumed training.
    """
    out = []
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger" or getattr(rank_zero_only, "rank", 0) != 0:
            out.append(logger)
            continue
        deadline = time.monotonic() + wait_s
        while True:
            try:
                _ = logger.experiment
                out.append(logger)
                break
            except Exception as err:
                if "in use" not in str(err):
                    raise
                if time.monotonic() >= deadline:
                    log.warning(
                        "W&B run %s is still held by the interrupted process (%s); logging "
                        "the resumed part to a new W&B run",
                        cfg.logger.wandb.id,
                        err,
                    )
                    with open_dict(cfg):
                        cfg.logger.wandb.id = None
                    fresh = instantiate_checked(cfg.logger.wandb, "logger.wandb")
                    out.append(fresh)
                    break
                time.sleep(poll_s)
    return out


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model of ``cfg`` and test the best checkpoint; return the final metrics.

    The config is checked first (:func:`~stnlab.validation.validate_config`), so a bad
    value fails before any data or model work. Writes ``metrics.json`` in
    ``cfg.paths.output_dir`` (``failure.json`` when the run fails). The W&B run is closed
    on every exit. ``ckpt_path=auto`` resumes this run directory's ``last.ckpt``.
    """
    output_dir = Path(cfg.paths.output_dir)
    try:
        validate_config(cfg)
        ckpt_path, checkpoint = checkpoint_for_run(cfg)
        if cfg.get("ckpt_path") == "auto":
            log.info(
                "ckpt_path=auto: %s",
                f"resuming {ckpt_path}"
                if ckpt_path
                else f"no last.ckpt in {output_dir / 'checkpoints'}; starting afresh",
            )
        resumed_wandb = cfg.get("train", True) and _resume_wandb_run(cfg, checkpoint)
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
        callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks")
        loggers = instantiate_dict(cfg.get("logger"), "logger")
        if resumed_wandb:
            loggers = start_resumed_wandb(loggers, cfg)
        trainer: L.Trainer = instantiate_checked(
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
            metrics.update(_scalar_metrics(trainer.callback_metrics))
            best = getattr(model, "val_acc_best", None)
            if best is not None and best.update_called and "val/acc_best" not in metrics:
                # resumed from a finished run: no epoch ran, the best is the checkpoint's
                metrics["val/acc_best"] = float(best.compute())
        if cfg.get("test", True):
            ckpt = _checkpoint_to_test(cfg, trainer, ckpt_path)
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
            metrics.update(_scalar_metrics(trainer.callback_metrics))
            if ckpt:
                metrics["test_ckpt"] = ckpt  # type: ignore[assignment]
        if trainer.is_global_zero:  # one file per run, whatever the number of processes
            text = json.dumps(metrics, indent=2, sort_keys=True)
            (output_dir / "metrics.json").write_text(text)
            (output_dir / "failure.json").unlink(missing_ok=True)  # a resumed run that passed
        return metrics
    except BaseException as err:
        if getattr(rank_zero_only, "rank", 0) == 0:
            write_failure(output_dir, err)
        raise
    finally:
        close_wandb()
