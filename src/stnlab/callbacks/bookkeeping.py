"""Run bookkeeping that Lightning does not keep: RNG states, W&B run id, final fit metrics.

Kept out of the LightningModule (which only learns) and always installed by the train
task, so it cannot be switched off by a config.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger


def _numpy_state_to_plain(state: tuple) -> tuple:
    """NumPy's RNG state with its key array as a tensor (loadable with ``weights_only``)."""
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)


def _numpy_state_from_plain(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The one-number entries of Lightning's ``callback_metrics`` as floats."""
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


class RunBookkeeping(L.Callback):
    """Saves with every checkpoint, and restores on resume:

    * ``stnlab_rng``: the torch (and CUDA), NumPy and Python RNG states, so a resumed run
      continues exactly as an uninterrupted one would;
    * ``stnlab_wandb_id``: the W&B run id, so a resume logs into the same run;
    * ``stnlab_fit_metrics``: the train/val metrics the fit ended with, added to
      ``last.ckpt`` when training ends, so a run interrupted during
      its final test, or a finished run rerun with ``ckpt_path=last``, reports the same
      ``metrics.json`` as an uninterrupted one.
    """

    def __init__(self) -> None:
        self.fit_metrics: dict[str, float] = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Add the final fit metrics to ``last.ckpt`` (nothing else in it changes)."""
        self.fit_metrics = scalar_metrics(trainer.callback_metrics)
        last = getattr(trainer.checkpoint_callback, "last_model_path", "")
        if last and trainer.is_global_zero and Path(last).is_file():
            checkpoint = torch.load(last, map_location="cpu", weights_only=True)
            checkpoint["stnlab_fit_metrics"] = dict(self.fit_metrics)
            trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, last)
        trainer.strategy.barrier("stnlab_fit_metrics")

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["stnlab_rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "python": random.getstate(),
        }
        ids = [lg.version for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if ids:
            checkpoint["stnlab_wandb_id"] = ids[0]
        if self.fit_metrics:
            checkpoint["stnlab_fit_metrics"] = dict(self.fit_metrics)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.fit_metrics = dict(checkpoint.get("stnlab_fit_metrics") or {})
        rng = checkpoint.get("stnlab_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            np.random.set_state(_numpy_state_from_plain(rng["numpy"]))
            random.setstate(rng["python"])
