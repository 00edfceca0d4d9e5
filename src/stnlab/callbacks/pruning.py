"""Pruning for Optuna searches: a trial the pruner gives up on stops training early.

The Optuna sweeper of ``hparams_search=…`` (``hydra_plugins.stnlab_sweepers.optuna``) sets
``STNLAB_OPTUNA_TRIAL`` in each job's environment; ``src/train.py`` then adds
:class:`OptunaPruning`, the equivalent of optuna-integration's
``PyTorchLightningPruningCallback`` that ends the fit as Lightning's early stopping does
(``trainer.should_stop``) instead of raising, so that the run's checkpoints, metrics and
summary are written as for any finished run.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import lightning as L

from stnlab.errors import ConfigError

log = logging.getLogger(__name__)

TRIAL_ENV = "STNLAB_OPTUNA_TRIAL"
"""A job's trial: ``<storage URL>|<study name>|<trial id>``."""

PRUNED_ATTR = "pruned_at_epoch"
"""The user attribute set on a trial this callback stopped (the sweeper records it as
``PRUNED``)."""


class OptunaPruning(L.Callback):
    """Report ``monitor`` to an Optuna ``trial`` after every validation epoch (the epoch is
    the step); when the study's pruner says so, mark the trial and stop training.

    Args:
        trial: the ``optuna.trial.Trial`` this run is.
        monitor: the metric the search optimises (``optimized_metric``).
    """

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.pruned_at: int | None = None

    @classmethod
    def from_env(cls, monitor: str | None, pruner: Any = None) -> list[OptunaPruning]:
        """``[OptunaPruning]`` for the trial named in ``STNLAB_OPTUNA_TRIAL``, or ``[]``
        outside an Optuna search (or without a metric to report).

        ``pruner``: the study's pruner (a study keeps none in its storage); default: the
        one this job's Hydra config names (``hydra.sweeper.pruner``).
        """
        spec = os.environ.get(TRIAL_ENV)
        if not spec or not monitor:
            return []
        try:
            import optuna
        except ImportError:
            raise ConfigError(
                f"{TRIAL_ENV} names an Optuna trial, but optuna is not installed: "
                'pip install -e ".[sweep]"'
            ) from None
        storage, study_name, trial_id = spec.rsplit("|", 2)
        if pruner is None:
            pruner = _configured_pruner()
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        return [cls(optuna.trial.Trial(study, int(trial_id)), monitor)]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            self.trial.set_user_attr(PRUNED_ATTR, epoch)
            log.info(
                "Optuna pruned trial %d after epoch %d (%s = %.4g): training stops here",
                self.trial.number,
                epoch,
                self.monitor,
                float(value),
            )
            trainer.should_stop = True


def _configured_pruner() -> Any:
    """The pruner of this job's ``hydra.sweeper.pruner``, or None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    if not HydraConfig.initialized():
        return None
    node = HydraConfig.get().sweeper.get("pruner")
    return instantiate(node) if node is not None else None
