"""Habits users bring from the Lightning + Hydra template and W&B: presets that exist
(callbacks=none, logger=many_loggers, debug=profiler, trainer=mps), W&B runs named as their
folders, checkpoints as W&B artifacts, gradients through wandb.watch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from stnlab.errors import ConfigError
from stnlab.tasks import train


def test_many_loggers_and_no_callbacks(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("model=cnn", "debug=limit", "logger=many_loggers", "callbacks=none")
    assert set(cfg.logger) == {"wandb", "tensorboard", "csv"}
    # no callback to build (debug=limit's tweak of the grid callback's cadence builds nothing)
    assert not [n for n in (cfg.get("callbacks") or {}).values() if "_target_" in n]
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert list((out / "wandb").glob("offline-run-*"))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "csv" / "metrics.csv").is_file()
    assert not (out / "transform_grids").exists() and not (out / "checkpoints").exists()


def test_debug_profiler_writes_its_report_to_the_run_folder(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg("model=cnn", "debug=profiler", "trainer.limit_train_batches=3")
    train(cfg)
    report = (Path(cfg.paths.output_dir) / "fit-profiler.txt").read_text()
    assert "FIT Profiler Report" in report and "run_training_batch" in report


def test_trainer_mps_is_refused_where_there_is_no_mps(
    make_cfg: Callable[..., DictConfig],
) -> None:
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    cfg = make_cfg("model=cnn", "trainer=mps", "debug=fdr")
    assert cfg.trainer.accelerator == "mps"
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=mps, but Apple's MPS"):
        train(cfg)


def test_a_wandb_run_is_named_as_its_folder_logs_gradients_and_stages_checkpoints(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    cfg = make_cfg(
        "model=cnn",
        "debug=limit",
        "logger=wandb",
        "logger.wandb.log_model=true",
        "logger.wandb.watch=gradients",
        "logger.wandb.watch_log_freq=1",
        output_dir=tmp_path / "my_run",
    )
    train(cfg)
    (run,) = (tmp_path / "my_run" / "wandb").glob("offline-run-*")
    assert "'name': 'my_run'" in (run / "logs" / "debug.log").read_text()
    history = next(run.glob("*.wandb")).read_bytes()
    assert b"gradients/" in history and b"parameters/" not in history
    staged = [p for p in (tmp_path / "wandb_data" / "artifacts" / "staging").rglob("*")]
    assert [p for p in staged if p.is_file()]  # the checkpoints, staged for upload
    assert b"model-" in history  # the artifact, logged as model-<run id>


def test_a_bad_watch_value_is_one_line(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("model=cnn", "debug=limit", "logger=wandb", "logger.wandb.watch=grads")
    with pytest.raises(
        ConfigError,
        match=r"^logger.wandb.watch='grads' must be null, 'gradients', 'parameters' or 'all'$",
    ):
        train(cfg)


def test_the_config_tree_is_printed_and_kept_in_the_run_folder(
    make_cfg: Callable[..., DictConfig], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = make_cfg("model=cnn", "debug=fdr", output_dir=tmp_path / "on")
    train(cfg)
    tree = (tmp_path / "on" / "config_tree.log").read_text()
    branches = [line.split()[-1] for line in tree.splitlines() if line.startswith(("├──", "└──"))]
    assert branches[:5] == ["data", "model", "callbacks", "logger", "trainer"]
    assert "_target_: stnlab.models.CNN" in tree and "${" not in tree  # resolved
    assert "_target_: stnlab.models.CNN" in capsys.readouterr().out
    off = make_cfg(
        "model=cnn", "debug=fdr", "extras.print_config=false", output_dir=tmp_path / "off"
    )
    train(off)
    assert not (tmp_path / "off" / "config_tree.log").exists()


def test_a_changed_private_wandb_api_falls_back_to_the_public_lookup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from wandb.sdk import wandb_setup

    from stnlab.loggers import WANDB_DEFAULT_URL, wandb_base_url, wandb_credentials

    def changed(*args: object, **kwargs: object) -> None:
        raise TypeError("authenticate_session() got an unexpected keyword argument")

    try:
        from wandb.sdk.lib import wbauth
    except ImportError:  # an older W&B (the floor, 0.17) has no such module at all
        wbauth = None
    if wbauth is not None:
        monkeypatch.setattr(wbauth, "authenticate_session", changed)
    monkeypatch.setattr(wandb_setup, "singleton", changed, raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_base_url() == WANDB_DEFAULT_URL
    assert wandb_credentials(WANDB_DEFAULT_URL) is False  # no key: offline
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_credentials(WANDB_DEFAULT_URL) is True


def test_paths_come_from_the_project_root_wherever_a_command_starts(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import yaml

    from cli_helper import ROOT

    env = {k: v for k, v in os.environ.items() if k != "STNLAB_DATA_DIR"}
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "hparams_search=loc_net_optuna"]
    for cwd in (ROOT / "src", tmp_path):
        proc = subprocess.run(
            [*cmd, "--cfg", "all", "--resolve"], capture_output=True, text=True, env=env, cwd=cwd
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        cfg = yaml.safe_load(proc.stdout)
        assert cfg["paths"]["root_dir"] == str(ROOT)
        assert cfg["paths"]["data_dir"] == str(ROOT / "data")
        assert cfg["hydra"]["run"]["dir"].startswith(f"{ROOT}/outputs/train/runs/")
        assert cfg["hydra"]["sweep"]["dir"].startswith(f"{ROOT}/outputs/train/multiruns/")
        assert cfg["hydra"]["sweeper"]["storage"] == f"sqlite:///{ROOT}/outputs/loc_net_optuna.db"
    assert not (ROOT / "src" / "outputs").exists() and not (ROOT / "src" / "data").exists()
    assert list(tmp_path.iterdir()) == []
