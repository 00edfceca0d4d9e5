"""The Optuna sweeper of ``hparams_search=…``: a search on current Optuna (≥ 4), with pruning.

A Hydra ``Sweeper`` that asks an Optuna study for trials, launches each batch of them as
jobs through the configured launcher (basic, joblib, submitit) and tells the study each
job's result. Its config is ``conf/hydra/sweeper/optuna.yaml`` (the keys
hydra-optuna-sweeper had: ``direction``, ``study_name``, ``storage``, ``n_trials``,
``n_jobs``, ``max_failure_rate``, ``sampler``, ``params``) plus ``pruner``.

* **Search space**: ``params`` and sweeps given on the command line, in Hydra's override
  grammar: ``choice(a, b)`` and ``range(…)`` are categorical, ``interval(lo, hi)`` is a
  float range, ``int(interval(lo, hi))`` an integer one, ``tag(log, …)`` on a log scale.
* **Resume**: with a ``storage`` (SQLite), running the same command again adds trials to
  the same study.
* **Pruning**: each job finds its trial through ``STNLAB_OPTUNA_TRIAL`` (set with
  ``hydra.job.env_set``) and :class:`stnlab.callbacks.OptunaPruning` reports the optimised
  metric after every validation; a trial the pruner stops ends its training early and is
  recorded as ``PRUNED``.

Without a ``storage`` the study lives in ``<sweep dir>/optuna.db``, where every job,
in this process or another, can reach it. The summary of the sweep and the exit status of
a search whose every trial failed are the ``SweepSummary`` callback's
(:mod:`stnlab.analysis.sweep`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from stnlab.callbacks.pruning import PRUNED_ATTR, TRIAL_ENV
from stnlab.errors import ConfigError

log = logging.getLogger(__name__)


def _optuna() -> Any:
    """The optuna module, or a one-line error saying which extra installs it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError('hparams_search= needs optuna >= 4: pip install -e ".[sweep]"') from None
    return optuna


def distribution(override: Override) -> Any:
    """The Optuna distribution of one sweep override (``choice``, ``range``, ``interval``,
    ``tag(log, interval(…))``)."""
    d = _optuna().distributions
    value = override.value()
    if isinstance(value, ChoiceSweep | RangeSweep):
        return d.CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return d.IntDistribution(value.start, value.end, log=log_scale)
        return d.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(
        f"hydra.sweeper.params: {override.input_line} is not a search range; use choice(…), "
        "range(…), interval(low, high) or tag(log, interval(low, high))"
    )


def search_space(
    params: DictConfig | dict | None, arguments: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """The search space (``key → distribution``) and the fixed overrides, from the config's
    ``params`` and the command line's ``arguments`` (a sweep there joins the space; a
    plain value is passed to every trial)."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()]
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides([*lines, *arguments]):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def sqlite_absolute(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (jobs in other processes or
    folders reach the same file) and its folder created; other URLs as they are.

    >>> sqlite_absolute("postgresql://host/db")
    'postgresql://host/db'
    """
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path = Path(url.removeprefix(prefix)).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{prefix}{path}"


def _value(value: Any) -> str:
    """A trial's parameter as an override value (a string that parses back to itself)."""
    return f"'{value}'" if isinstance(value, str) and not value.isidentifier() else str(value)


class OptunaSweeper(Sweeper):
    """Hydra sweeper: an Optuna study's trials as jobs, batch by batch.

    Args:
        sampler: an ``optuna.samplers`` sampler (built from ``hydra.sweeper.sampler``).
        direction: ``maximize`` or ``minimize`` the task's return value.
        study_name: the study's name in ``storage``.
        storage: an Optuna storage URL (``sqlite:///path.db``), or None for
            ``<sweep dir>/optuna.db``.
        n_trials: trials this command adds to the study.
        n_jobs: trials per batch (run side by side by a parallel launcher).
        max_failure_rate: stop the search once more than this share of its trials failed.
        params: the search space, ``key: <sweep expression>``.
        pruner: an ``optuna.pruners`` pruner, or None for no pruning.
    """

    def __init__(
        self,
        sampler: Any,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        pruner: Any = None,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"hydra.sweeper.direction={direction!r} must be 'maximize' or 'minimize'"
            )
        for key, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"hydra.sweeper.{key}={value!r} must be an integer >= 1")
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise ConfigError(
                f"hydra.sweeper.max_failure_rate={max_failure_rate!r} must be in [0, 1]"
            )
        self.sampler, self.pruner = sampler, pruner
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.max_failure_rate = float(max_failure_rate)
        self.params = params
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Any]:
        optuna = _optuna()
        assert self.config is not None and self.launcher is not None
        space, fixed = search_space(self.params, arguments)
        if not space:
            raise ConfigError(
                "hparams_search: the search space is empty; give hydra.sweeper.params "
                "(e.g. model.optimizer.lr: tag(log, interval(0.001, 0.1)))"
            )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = sqlite_absolute(self.storage or f"sqlite:///{sweep_dir / 'optuna.db'}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner if self.pruner is not None else optuna.pruners.NopPruner(),
            direction=self.direction,
            load_if_exists=True,
        )
        log.info(
            "Optuna study %s in %s: %d trials so far, adding %d over %s",
            self.study_name,
            storage,
            len(study.trials),
            self.n_trials,
            ", ".join(space),
        )
        returns: list[Any] = []
        failed = 0
        done = 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [
                (
                    *fixed,
                    *(f"{key}={_value(value)}" for key, value in trial.params.items()),
                    f"++hydra.job.env_set.{TRIAL_ENV}='{storage}|{self.study_name}|"
                    f"{trial._trial_id}'",
                )
                for trial in trials
            ]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=len(returns))
            for trial, result in zip(trials, results, strict=True):
                state, value = _outcome(study, trial, result)
                if state == "COMPLETE":
                    study.tell(trial, value)
                else:
                    study.tell(trial, state=getattr(optuna.trial.TrialState, state))
                    failed += state == "FAIL"
                log.info("trial %d: %s", trial.number, value if value is not None else state)
            returns.extend(results)
            done += len(trials)
            if failed / done > self.max_failure_rate:
                log.error(
                    "%d of %d trials failed, more than max_failure_rate=%g: search stopped",
                    failed,
                    done,
                    self.max_failure_rate,
                )
                break
        self._write_results(study, sweep_dir)
        return returns

    def _write_results(self, study: Any, sweep_dir: Path) -> None:
        """``optimization_results.yaml`` with the study's best trial (when one finished)."""
        optuna = _optuna()
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not finished:
            return
        best = study.best_trial
        log.info("best trial %d: %s = %s", best.number, best.params, best.value)
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")


def _outcome(study: Any, trial: Any, result: Any) -> tuple[str, float | None]:
    """``(state, value)`` of a finished job: ``PRUNED`` when the pruning callback stopped
    it, ``COMPLETE`` with a finite return value, ``FAIL`` otherwise."""
    # the trial as the job left it in the storage (a Trial object keeps its state at ask)
    stored = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    if PRUNED_ATTR in stored.user_attrs:
        return "PRUNED", None
    try:
        value = result.return_value
    except Exception:  # the job raised: its log says why
        return "FAIL", None
    if isinstance(value, int | float) and math.isfinite(value):
        return "COMPLETE", float(value)
    return "FAIL", None
