"""stnlab's Optuna sweeper (``hydra_plugins.stnlab_sweepers.optuna``) and its pruning
callback, on Optuna >= 4: the search space read from Hydra's sweep grammar, a study's trial
found from a job's environment, a trial pruned on its validation curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")  # pip install -e ".[sweep]"

from hydra_plugins.stnlab_sweepers.optuna import (  # noqa: E402
    OptunaSweeper,
    search_space,
    sqlite_absolute,
)
from stnlab.callbacks.pruning import PRUNED_ATTR, TRIAL_ENV, OptunaPruning  # noqa: E402
from stnlab.errors import ConfigError  # noqa: E402


def test_the_search_space_reads_hydra_s_sweep_grammar() -> None:
    params = {
        "model/loc_net": "choice(fc, conv_small)",
        "model.optimizer.lr": "tag(log, interval(0.001, 0.1))",
        "model.scheduler.warmup": "interval(0.0, 0.3)",
        "data.batch_size": "tag(log, int(interval(32, 256)))",
        "seed": "range(1, 4)",
    }
    space, fixed = search_space(params, ["trainer.max_epochs=2", "model.loc_lr_mult=0.1,0.3"])
    d = optuna.distributions
    assert space["model/loc_net"] == d.CategoricalDistribution(["fc", "conv_small"])
    assert space["model.optimizer.lr"] == d.FloatDistribution(0.001, 0.1, log=True)
    assert space["model.scheduler.warmup"] == d.FloatDistribution(0.0, 0.3)
    assert space["data.batch_size"] == d.IntDistribution(32, 256, log=True)
    assert space["seed"] == d.CategoricalDistribution([1, 2, 3])
    assert space["model.loc_lr_mult"] == d.CategoricalDistribution([0.1, 0.3])  # command line
    assert fixed == ["trainer.max_epochs=2"]


def test_a_plain_value_in_params_is_passed_to_every_trial() -> None:
    space, fixed = search_space({"model.optimizer.lr": "0.01"}, [])
    assert space == {} and fixed == ["model.optimizer.lr=0.01"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("direction", "up", r"^hydra.sweeper.direction='up' must be 'maximize' or 'minimize'$"),
        ("n_trials", 0, r"^hydra.sweeper.n_trials=0 must be an integer >= 1$"),
        ("max_failure_rate", 1.5, r"^hydra.sweeper.max_failure_rate=1.5 must be in \[0, 1\]$"),
    ],
)
def test_bad_sweeper_settings_get_one_line(key: str, value: Any, message: str) -> None:
    settings: dict[str, Any] = {
        "sampler": None,
        "direction": "maximize",
        "study_name": "s",
        "storage": None,
        "n_trials": 2,
        "n_jobs": 1,
        "max_failure_rate": 0.0,
        "params": None,
    }
    with pytest.raises(ConfigError, match=message):
        OptunaSweeper(**{**settings, key: value})


def test_a_relative_sqlite_path_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = sqlite_absolute("sqlite:///outputs/study.db")
    assert url == f"sqlite:///{tmp_path / 'outputs' / 'study.db'}"
    assert (tmp_path / "outputs").is_dir()  # SQLite cannot create the folder itself


class _Trainer:
    sanity_checking = False
    is_global_zero = True

    def __init__(self, epoch: int, value: float) -> None:
        import torch

        self.current_epoch, self.should_stop = epoch, False
        self.callback_metrics = {"val/acc_best": torch.tensor(value)}


def test_a_trial_below_the_median_is_pruned_and_stops_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(
        study_name="s",
        storage=storage,
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    for curve in ([0.5, 0.8, 0.9], [0.6, 0.85, 0.95]):  # two finished trials
        done = study.ask()
        for epoch, value in enumerate(curve):
            done.report(value, epoch)
        study.tell(done, curve[-1])
    trial = study.ask()
    monkeypatch.setenv(TRIAL_ENV, f"{storage}|s|{trial._trial_id}")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    (callback,) = OptunaPruning.from_env("val/acc_best", pruner)  # in the job's process
    assert OptunaPruning.from_env(None) == []  # nothing to report: no callback
    good = _Trainer(0, 0.7)  # above the median at epoch 0 (0.55): goes on
    callback.on_validation_end(good, None)  # type: ignore[arg-type]
    assert not good.should_stop and callback.pruned_at is None
    bad = _Trainer(1, 0.3)  # far below the median at epoch 1 (0.825)
    callback.on_validation_end(bad, None)  # type: ignore[arg-type]
    assert bad.should_stop and callback.pruned_at == 1
    stored = optuna.load_study(study_name="s", storage=storage).trials[trial.number]
    assert stored.user_attrs[PRUNED_ATTR] == 1
    assert stored.intermediate_values == pytest.approx({0: 0.7, 1: 0.3})


def test_outside_a_search_no_pruning_callback_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRIAL_ENV, raising=False)
    assert OptunaPruning.from_env("val/acc_best") == []
