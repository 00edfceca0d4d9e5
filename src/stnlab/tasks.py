"""The train task behind ``src/train.py``: instantiate from config, fit, test, clean up.

Tests call :func:`train` in-process with a composed config; the entry point only adds
``@hydra.main``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from stnlab import config as _config  # noqa: F401  (registers resolvers)

log = logging.getLogger(__name__)


def instantiate_dict(cfg: DictConfig | None, what: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a mapping (callbacks, loggers); skip nulls."""
    if cfg is None:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{what} config must be a mapping of name → object, got {type(cfg)}")
    return [instantiate(node) for node in cfg.values() if node is not None and "_target_" in node]


def close_wandb() -> None:
    """Finish the active W&B run, if any, so the next job of a multirun gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _checkpoint_to_test(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    """This fit's best checkpoint; without training, ``ckpt_path``; else current weights."""
    if not cfg.get("train", True):
        return cfg.get("ckpt_path")
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback is not None else ""
    if not best:
        log.warning("no best checkpoint was saved; testing the current weights")
    return best or None


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model of ``cfg`` and test the best checkpoint; return the final metrics.

    Writes ``metrics.json`` in ``cfg.paths.output_dir``. The W&B run is closed on every exit.
    """
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    try:
        datamodule: L.LightningDataModule = instantiate(cfg.data)
        model: L.LightningModule = instantiate(cfg.model)
        model.run_config = OmegaConf.to_container(cfg, resolve=True)
        callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks")
        loggers = instantiate_dict(cfg.get("logger"), "logger")
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        for logger in trainer.loggers:
            logger.log_hyperparams(model.run_config)

        metrics: dict[str, float] = {}
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics.update(_scalar_metrics(trainer.callback_metrics))
        if cfg.get("test", True):
            ckpt = _checkpoint_to_test(cfg, trainer)
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
            metrics.update(_scalar_metrics(trainer.callback_metrics))
            if ckpt:
                metrics["test_ckpt"] = ckpt  # type: ignore[assignment]
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return metrics
    finally:
        close_wandb()
