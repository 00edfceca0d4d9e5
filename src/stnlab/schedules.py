"""Learning-rate schedules that keep each parameter group's own LR.

:class:`WarmupDecayLR` is torch's ``LambdaLR`` with a warm-up/decay factor: it scales every
group's initial LR by the same factor, so ``model.loc_lr_mult`` (the transformer's group at
a fraction of the base LR) holds.

Both LightningModules take their optimiser set-up from here: the transformer's scaled LR
(:func:`scaled_lr`), the scheduler's interval (:func:`check_interval`) and what
``configure_optimizers`` returns (:func:`optimizer_config`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from stnlab.checks import check_range
from stnlab.errors import ConfigError

SHAPES = ("cosine", "linear", "constant")
INTERVALS = ("epoch", "step")


def warmup_decay_factor(
    step: int, total_steps: int, warmup_steps: int, shape: str, final_factor: float
) -> float:
    """The LR factor at ``step``: linear warm-up from 0, then ``shape`` down to ``final_factor``.

    >>> warmup_decay_factor(0, 100, 10, "cosine", 0.0)
    0.1
    >>> warmup_decay_factor(10, 100, 10, "cosine", 0.0)
    1.0
    >>> round(warmup_decay_factor(55, 100, 10, "linear", 0.0), 3)
    0.5
    >>> warmup_decay_factor(100, 100, 10, "cosine", 0.01)
    0.01
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if shape == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif shape == "linear":
        decay = 1.0 - progress
    else:
        decay = 1.0
    return final_factor + (1.0 - final_factor) * decay


class WarmupDecayLR(LambdaLR):
    """``LambdaLR`` with :func:`warmup_decay_factor`: a linear warm-up over ``warmup`` of
    ``total_steps``, then a cosine or linear decay, its arguments checked.

    ``LambdaLR`` scales every parameter group's own initial LR, so the localisation net's
    ``loc_lr_mult`` holds throughout. Step it once per optimiser step
    (``model.scheduler_interval: step``).

    Args:
        optimizer: the optimiser whose groups to schedule.
        total_steps: steps of the whole run (the trainer's ``max_steps``).
        warmup: the warm-up's share of ``total_steps``, in ``[0, 1)``.
        shape: ``"cosine"``, ``"linear"`` or ``"constant"`` after the warm-up.
        final_factor: the LR at the last step as a fraction of the peak, in ``[0, 1]``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup: float = 0.0,
        shape: str = "cosine",
        final_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        check_range("model.scheduler.total_steps", total_steps, integer=True, minimum=1)
        check_range("model.scheduler.warmup", warmup, minimum=0.0, below=1.0)
        check_range("model.scheduler.final_factor", final_factor, minimum=0.0, maximum=1.0)
        if shape not in SHAPES:
            raise ConfigError(
                f"model.scheduler.shape={shape!r} must be one of {', '.join(map(repr, SHAPES))}"
            )
        self.total_steps = int(total_steps)
        self.warmup_steps = round(float(warmup) * self.total_steps)
        factor = functools.partial(
            warmup_decay_factor,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            shape=shape,
            final_factor=float(final_factor),
        )
        super().__init__(optimizer, factor, last_epoch)


def check_interval(interval: str) -> None:
    """Raise :class:`~stnlab.errors.ConfigError` unless ``model.scheduler_interval`` is
    ``"epoch"`` or ``"step"``.

    >>> check_interval("step")
    >>> check_interval("batch")
    Traceback (most recent call last):
    ...
    stnlab.errors.ConfigError: model.scheduler_interval='batch' must be 'epoch' or 'step'
    """
    if interval not in INTERVALS:
        raise ConfigError(
            f"model.scheduler_interval={interval!r} must be {' or '.join(map(repr, INTERVALS))}"
        )


def scaled_lr(optimizer_factory: Callable[..., Optimizer], mult: float) -> float:
    """The LR of the transformer's parameter group: the partial optimiser's ``lr`` times
    ``mult`` (``model.loc_lr_mult``). The optimiser must name its ``lr``, or there would be
    nothing to scale.

    >>> import torch
    >>> scaled_lr(functools.partial(torch.optim.SGD, lr=0.1), 0.5)
    0.05
    """
    base_lr = getattr(optimizer_factory, "keywords", {}).get("lr")
    if base_lr is None:
        func = getattr(optimizer_factory, "func", optimizer_factory)
        raise ConfigError(
            f"model.optimizer ({getattr(func, '__name__', func)}) has no lr for "
            "model.loc_lr_mult to scale; set one, e.g. model.optimizer.lr=0.001"
        )
    return float(base_lr) * mult


def optimizer_config(
    optimizer: Optimizer,
    scheduler_factory: Callable[..., LRScheduler] | None,
    interval: str,
    estimated_steps: Callable[[], int],
) -> dict[str, Any]:
    """What a LightningModule's ``configure_optimizers`` returns for ``optimizer`` and an
    optional partial scheduler (``_partial_: true``) stepping every ``interval``
    (``"epoch"`` or ``"step"``).

    A ``total_steps`` keyword below 1 (``${trainer.max_steps}`` of a run counted in epochs)
    becomes ``estimated_steps()``: the trainer's estimate of the run's optimiser steps.
    """
    if scheduler_factory is None:
        return {"optimizer": optimizer}
    factory = scheduler_factory
    total = getattr(factory, "keywords", {}).get("total_steps")
    if total is not None and int(total) < 1:  # counted in epochs: the trainer knows
        factory = functools.partial(factory, total_steps=int(estimated_steps()))
    scheduler = factory(optimizer=optimizer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
