"""Sweeps and scale-out from ``src/train.py``: grid multirun with W&B groups, Optuna with
SQLite resume, joblib and submitit launchers, DDP on the CPU (alone and inside a multirun).

Every test runs the real CLI in a subprocess on the synthetic MNIST (see ``cli_helper``).
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_helper import ROOT, cli_env, run_train, with_tiny_run_base

pytestmark = pytest.mark.e2e  # every test here launches src/train.py (run with -m e2e)

TINY = [
    "debug=limit",  # 5 training batches per epoch, checkpoints and grids written
    "trainer.max_epochs=1",
    "data.val_size=100",
    "data.batch_size=32",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def _wandb_runs(job: Path) -> list[tuple[str, str]]:
    """``(run id, init settings logged by wandb)`` of each offline run under ``job``."""
    runs = []
    for run in sorted((job / "wandb").glob("offline-run-*")):
        runs.append((run.name.rsplit("-", 1)[-1], (run / "logs" / "debug.log").read_text()))
    return runs


def _summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


def _files_outside(root: Path, allowed: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and allowed not in p.parents]


def test_grid_sweep_2x2_runs_every_job_with_its_own_grouped_wandb_run(
    fake_mnist_root: Path, tmp_path: Path
) -> None:
    sweep, cwd = tmp_path / "sweep", tmp_path / "cwd"
    cwd.mkdir()
    proc = run_train(
        fake_mnist_root,
        "-m",
        "model=stn_cnn",
        "model/loc_net=fc,conv_small",
        "model.optimizer.lr=0.01,0.02",
        *TINY,
        "logger=wandb",
        f"hydra.sweep.dir={sweep}",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    ids = set()
    for job in jobs:
        assert (job / "metrics.json").exists() and (job / "checkpoints" / "last.ckpt").exists()
        runs = _wandb_runs(job)
        assert len(runs) == 1
        run_id, settings = runs[0]
        ids.add(run_id)
        assert "'group': 'debug/sweep'" in settings  # <task_name>/<sweep folder>
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        loc_net = re.search(r"model/loc_net=(\w+)", overrides).group(1)
        assert f"'model/loc_net={loc_net}'" in settings  # tagged with its overrides
        assert f"'name': 'sweep/{job.name}'" in settings
    assert len(ids) == 4
    table = _summary(sweep)
    assert len(table) == 4 and {t["status"] for t in table} == {"ok"}
    accs = [float(t["val/acc_best"]) for t in table]
    assert accs == sorted(accs, reverse=True)
    assert {"model/loc_net", "model.optimizer.lr"} <= set(table[0])
    assert _files_outside(tmp_path, sweep) == []  # nothing written beside the sweep


def test_optuna_search_resumes_from_sqlite_and_survives_failed_trials(
    fake_mnist_root: Path, tmp_path: Path
) -> None:
    optuna = pytest.importorskip("optuna")  # pip install -e ".[sweep]"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = [
        "hparams_search=loc_net_optuna",
        f"hydra.sweeper.storage={storage}",
        *TINY,
        "logger=csv",
    ]
    first = run_train(
        fake_mnist_root, *common, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={tmp_path / 'a'}"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    # Resumed for 2 more trials that all fail (a val split larger than the data): recorded,
    # and since no trial of this search finished, the command exits with 1.
    second = run_train(
        fake_mnist_root,
        *common,
        "hydra.sweeper.n_trials=2",
        "data.val_size=100000",
        f"hydra.sweep.dir={tmp_path / 'b'}",
    )
    assert second.returncode == 1, second.stderr[-3000:]
    assert "2 of 2 trials failed" in second.stderr
    study = optuna.load_study(study_name="loc_net_optuna", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * 3 + ["FAIL"] * 2
    assert 0.0 <= study.best_value <= 1.0
    assert set(study.best_params) == {
        "model/loc_net",
        "model.net.transformer.loc_net.width_mult",
        "model.loc_lr_mult",
        "model.optimizer.lr",
    }
    assert [t["status"] for t in _summary(tmp_path / "b")] == ["failed", "failed"]


def test_an_optuna_search_prunes_trials_on_their_validation_curve(
    fake_mnist_root: Path, tmp_path: Path
) -> None:
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = run_train(
        fake_mnist_root,
        "hparams_search=loc_net_optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.n_trials=2",
        # a pruner that stops every trial after its first epoch, whatever its accuracy
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "~hydra.sweeper.pruner.n_startup_trials",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        "++hydra.sweeper.pruner.lower=1.1",
        *TINY,
        "trainer.max_epochs=3",
        "logger=csv",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="loc_net_optuna", storage=storage)
    assert [t.state.name for t in study.trials] == ["PRUNED"] * 2
    assert [t.user_attrs["pruned_at_epoch"] for t in study.trials] == [0, 0]
    assert all(list(t.intermediate_values) == [0] for t in study.trials)
    table = _summary(tmp_path / "sweep")
    assert [t["status"] for t in table] == ["pruned", "pruned"]
    for job in ("0", "1"):
        metrics = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert metrics["pruned_at_epoch"] == 0 and "test/acc" not in metrics  # not tested
        last = torch.load(tmp_path / "sweep" / job / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["epoch"] == 0  # one epoch of three trained


def test_an_optuna_search_whose_every_trial_fails_ends_with_a_summary_and_one_line(
    fake_mnist_root: Path, tmp_path: Path
) -> None:
    pytest.importorskip("optuna")
    proc = run_train(
        fake_mnist_root,
        "hparams_search=loc_net_optuna",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",
        "hydra.sweeper.n_trials=2",
        *TINY,
        "logger=csv",
        "data.val_size=100000",  # larger than the data: every trial fails at set-up
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Record does not exist" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "trials failed" in line]
    assert errors == [f"Error: 2 of 2 trials failed; see {tmp_path / 'sweep' / 'summary.md'}"]
    table = _summary(tmp_path / "sweep")
    assert [t["status"] for t in table] == ["failed", "failed"]
    assert all("data.val_size=100000" in t["error"] for t in table)


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers_run_a_two_job_sweep(
    fake_mnist_root: Path, tmp_path: Path, launcher: str
) -> None:
    pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    sweep = tmp_path / "sweep"
    proc = run_train(
        fake_mnist_root,
        "-m",
        f"hydra/launcher={launcher}",
        "model=cnn",
        "model.optimizer.lr=0.01,0.02",
        *TINY,
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = _summary(sweep)
    assert sorted(t["model.optimizer.lr"] for t in table) == ["0.01", "0.02"]
    assert all(t["status"] == "ok" for t in table)
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["test/acc"] >= 0.0


def _check_ddp_run(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert (run / "checkpoints" / "best.ckpt").exists()
    assert (run / "train_ddp_process_1.log").exists()  # rank 1 ran, and logged here
    assert len(_wandb_runs(run)) == 1  # one W&B run: metrics are logged once, by rank 0
    assert not (run / "failure.json").exists()


def test_ddp_cpu_single_run_keeps_every_file_in_the_run_dir(
    fake_mnist_root: Path, tmp_path: Path
) -> None:
    run, cwd = tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    proc = run_train(
        fake_mnist_root,
        "trainer=ddp_cpu",
        "model=stn_cnn",
        *TINY,
        "logger=wandb",
        f"hydra.run.dir={run}",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr
    _check_ddp_run(run)
    assert _files_outside(tmp_path, run) == []


def test_ddp_cpu_inside_a_multirun_runs_each_job_once_in_its_dir(
    fake_mnist_root: Path, tmp_path: Path
) -> None:
    sweep, cwd = tmp_path / "sweep", tmp_path / "cwd"
    cwd.mkdir()
    proc = run_train(
        fake_mnist_root,
        "-m",
        "trainer=ddp_cpu",
        "model=stn_cnn",
        "model/loc_net=fc,conv_small",
        *TINY,
        "logger=wandb",
        f"hydra.sweep.dir={sweep}",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each job launched its own second rank; no child replayed the sweep.
    assert proc.stderr.count("Initializing distributed: GLOBAL_RANK: 1") == 2
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        _check_ddp_run(sweep / job)
    assert [t["status"] for t in _summary(sweep)] == ["ok", "ok"]
    assert _files_outside(tmp_path, sweep) == []


@pytest.mark.parametrize("launcher", ["joblib", "basic"])
def test_sigterm_stops_a_sweep_s_workers_and_writes_which_jobs_were_cut_off(
    fake_mnist_root: Path, tmp_path: Path, launcher: str
) -> None:
    psutil = pytest.importorskip("psutil")
    if launcher == "joblib":
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    overrides = with_tiny_run_base(
        [
            "-m",
            f"hydra/launcher={launcher}",
            "model=cnn",
            "model.optimizer.lr=0.01,0.02",
            *TINY,
            "trainer.max_epochs=100000",  # runs until stopped
            "logger=csv",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *overrides]
    busy = 2 if launcher == "joblib" else 1  # jobs training at once
    with subprocess.Popen(
        cmd, env=cli_env(fake_mnist_root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        deadline = time.monotonic() + 300
        while len(list(sweep.glob("*/checkpoints/last.ckpt"))) < busy:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the jobs never wrote a checkpoint"
            time.sleep(0.5)
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 143, stderr[-3000:]
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, [p.cmdline() for p in alive]  # no worker trains on
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if "terminated by SIGTERM; jobs cut off" in line]
    cut = sorted(p.parent.parent.name for p in sweep.glob("*/checkpoints/last.ckpt"))[:busy]
    assert lines == [
        f"Error: the sweep was terminated by SIGTERM; jobs cut off: {', '.join(cut)}; see "
        f"{sweep / 'summary.md'} (each cut-off job says how to resume it)"
    ], stderr[-3000:]
    rows = {row["job"]: row for row in _summary(sweep)}
    for job in cut:
        assert rows[job]["status"] == "terminated"
        assert "Resume with: python src/train.py" in rows[job]["error"]
