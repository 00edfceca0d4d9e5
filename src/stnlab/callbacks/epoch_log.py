"""One log line per validation: progress for runs whose output goes to a file.

Off a terminal Lightning draws no progress bar (``conf/trainer/default.yaml``), so a batch
job's log would hold nothing between the model table and the test table. The train task
adds :class:`EpochLog` there instead: after every validation (not the sanity check) it logs
one line through ``logging``, to the console and the run folder's ``train.log``::

    epoch 3/10  step 705/2350  train loss 0.412  val acc 0.9712  pose undone 0.38  2m05s
    elapsed, 4m52s left

(one line in the log)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch

from stnlab.callbacks.health import batch_loss

log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    """``75`` → ``1m15s``, ``3725`` → ``1h02m``, ``9`` → ``9s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class EpochLog(L.Callback):
    """After each validation, log epoch, step, the mean training loss since the previous
    line, ``val/acc``, ``val/pose/undone`` (when logged), the time elapsed since the fit
    started and an estimate of the time left (from the steps done so far in this process,
    so a resumed run does not count the steps it skipped)."""

    def __init__(self) -> None:
        self._start = 0.0
        self._start_step = 0
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._start_step = time.monotonic(), trainer.global_step

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = batch_loss(outputs)
        if loss is not None:  # summed on its device: no sync per step
            loss = loss.detach().float()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._loss_count += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.is_global_zero:
            log.info("%s", self.line(trainer))
        self._loss_sum, self._loss_count = None, 0  # every rank: the next line's mean

    def line(self, trainer: L.Trainer) -> str:
        """The progress line for the trainer's state now."""
        step = trainer.global_step
        total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        parts = [f"epoch {trainer.current_epoch + 1}"]
        if trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.max_steps <= 0:
            parts[0] += f"/{trainer.max_epochs}"
        parts.append(f"step {step}/{int(total)}" if math.isfinite(total) else f"step {step}")
        if self._loss_sum is not None and self._loss_count:
            parts.append(f"train loss {float(self._loss_sum) / self._loss_count:.3f}")
        metrics = trainer.callback_metrics
        shown = (("val/acc", "val acc", ".4f"), ("val/pose/undone", "pose undone", ".2f"))
        for key, label, fmt in shown:
            if key in metrics:
                parts.append(f"{label} {float(metrics[key]):{fmt}}")
        elapsed = time.monotonic() - self._start
        timing = f"{_duration(elapsed)} elapsed"
        done = step - self._start_step
        if done > 0 and math.isfinite(total):
            timing += f", {_duration(elapsed / done * max(0, total - step))} left"
        parts.append(timing)
        return "  ".join(parts)
