"""The training task: ``python src/train.py``. Fit, test the best checkpoint, write
``metrics.json``; the runner (:mod:`stnlab.tasks.runner`) owns failure, SIGTERM and the
run folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from stnlab.callbacks.bookkeeping import RunBookkeeping, scalar_metrics
from stnlab.callbacks.epoch_log import EpochLog
from stnlab.callbacks.health import NonFiniteLossGuard
from stnlab.callbacks.pruning import PRUNED_ATTR, OptunaPruning
from stnlab.checkpoints import RESUME, AtomicCheckpointIO, check_fits, checkpoint_for_run
from stnlab.config import print_config_tree
from stnlab.config_checks import instantiate_checked, instantiate_dict, validate_config
from stnlab.launching import ddp_job_scope, install_ddp_relaunch, job_context, name_wandb_run
from stnlab.loggers import (
    WATCH_KEYS,
    keep_csv_history,
    log_final_hparams,
    resume_wandb_run,
    settle_wandb_mode,
    start_resumed_wandb,
    wandb_watch,
    watch_model,
    without_unset_wandb_settings,
)
from stnlab.tasks.runner import finite_metric, task
from stnlab.temp_files import write_text

log = logging.getLogger(__name__)


def _checkpoint_to_test(cfg: DictConfig, trainer: L.Trainer, ckpt_path: str | None) -> str | None:
    """This fit's best checkpoint; without training, ``ckpt_path``; else current weights."""
    if not cfg.get("train", True):
        return ckpt_path
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback is not None else ""
    if not best and trainer.fast_dev_run:  # Lightning saves no checkpoint then: as asked
        log.info("fast_dev_run saves no checkpoint; testing the current weights")
    elif not best:
        log.warning("no best checkpoint was saved; testing the current weights")
    return best or None


def terminal_display(trainer_cfg: DictConfig, first_job: bool = True) -> list[L.Callback]:
    """Lightning's rich progress bar and model summary, where ``trainer_cfg`` enables them;
    without a bar, :class:`~stnlab.callbacks.epoch_log.EpochLog`'s line per validation.

    Lightning 2.6 picks these itself when rich is installed, earlier releases TQDM and a
    logged summary: naming them keeps one display on every Lightning that stnlab allows.
    Rich rather than TQDM because redirected to a file TQDM writes every update ("\\r" and
    cursor-up codes) while rich writes plain text; ``enable_progress_bar`` is true only on a
    terminal (``conf/trainer/default.yaml``), so a log file gets no bar at all. The model
    summary is printed by the first job of a multirun only (``first_job``).
    """
    display: list[L.Callback] = []
    if trainer_cfg.get("enable_progress_bar", True):
        display.append(RichProgressBar())
    else:
        display.append(EpochLog())
    if trainer_cfg.get("enable_model_summary", True) and first_job:
        display.append(RichModelSummary())
    return display


def _report(output_dir: Path, metrics: dict[str, float], loggers: list[Any]) -> None:
    """Log the lines a user reads at the end: the final metrics, the run folder and how to
    open the dashboards written."""
    shown = [k for k in ("test/err", "test/acc", "val/acc_best") if k in metrics]
    if shown:
        log.info("final metrics: %s", ", ".join(f"{k} {metrics[k]:.4g}" for k in shown))
    log.info("run folder: %s", output_dir)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            log.info("TensorBoard: tensorboard --logdir %s", logger.save_dir)
        elif isinstance(logger, CSVLogger):
            log.info("CSV: %s", Path(logger.log_dir) / "metrics.csv")


@task(resumable=True)
def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model of ``cfg`` and test the best checkpoint; return the final metrics.

    The config is checked first (:func:`~stnlab.config_checks.validate_config`) and the W&B
    mode settled (:func:`~stnlab.loggers.settle_wandb_mode`), so a bad value or an
    unreachable W&B server fails before any data or model work. Writes ``metrics.json`` in
    ``cfg.paths.output_dir``. ``ckpt_path=last`` resumes this run directory's
    ``last.ckpt``; a finished run resumed reports the metrics it ended with.
    """
    output_dir = Path(cfg.paths.output_dir)
    rank = getattr(rank_zero_only, "rank", 0)
    validate_config(cfg)
    settle_wandb_mode(cfg)
    watch = wandb_watch(cfg)
    ckpt_path, checkpoint = checkpoint_for_run(cfg)  # may refuse: nothing written before
    if cfg.get("ckpt_path") in RESUME:
        log.info(
            "ckpt_path=%s: %s",
            cfg.ckpt_path,
            f"resuming {ckpt_path}"
            if ckpt_path
            else f"no last.ckpt in {output_dir / 'checkpoints'}; starting afresh",
        )
    resumed_wandb = cfg.get("train", True) and resume_wandb_run(cfg, checkpoint)
    ctx = job_context()
    name_wandb_run(cfg, ctx)
    if rank == 0:
        log.info("run folder: %s", output_dir)
    if rank == 0 and cfg.get("extras", {}).get("print_config"):
        print_config_tree(cfg, output_dir / "config_tree.log")
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
    pruning = OptunaPruning.from_env(cfg.get("optimized_metric"))
    callbacks = [
        *instantiate_dict(cfg.get("callbacks"), "callbacks"),
        NonFiniteLossGuard(),
        bookkeeping,
        *pruning,
        *terminal_display(cfg.trainer, first_job=ctx is None or not ctx.job_num),
    ]
    loggers = instantiate_dict(cfg.get("logger"), "logger", drop=WATCH_KEYS)
    loggers = without_unset_wandb_settings(loggers)
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
        # the summary, where wanted, is terminal_display's: Lightning adds none of its own
        enable_model_summary=False,
        _convert_="partial",  # plain lists: Lightning 2.4 takes no ListConfig of plugins
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(model.run_config)
    watch_model(trainer.loggers, model, *watch)

    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        # a finished run resumed: no epoch ran, the fit's metrics are the checkpoint's
        metrics.update(bookkeeping.fit_metrics)
        metrics.update(scalar_metrics(trainer.callback_metrics))
    if any(p.pruned_at is not None for p in pruning):
        metrics[PRUNED_ATTR] = pruning[0].pruned_at  # type: ignore[assignment]
    elif cfg.get("test", True):  # a pruned trial is not tested
        ckpt = _checkpoint_to_test(cfg, trainer, ckpt_path)
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
        metrics.update(scalar_metrics(trainer.callback_metrics))
        if ckpt:
            metrics["test_ckpt"] = ckpt  # type: ignore[assignment]
    if trainer.is_global_zero:  # one file per run, whatever the number of processes
        log_final_hparams(trainer.loggers, model.run_config, metrics)
        text = json.dumps(metrics, indent=2, sort_keys=True)
        write_text(output_dir / "metrics.json", text, "metrics")
        (output_dir / "failure.json").unlink(missing_ok=True)  # a resumed run passed
        _report(output_dir, metrics, trainer.loggers)
    return metrics


def train_job(cfg: DictConfig) -> float | None:
    """One job of ``src/train.py`` (single run, sweep job or DDP rank): the value of
    ``optimized_metric`` for a sweeper, or ``None``."""
    with ddp_job_scope():
        metrics = train(cfg)
    return finite_metric(metrics, cfg.get("optimized_metric"))
