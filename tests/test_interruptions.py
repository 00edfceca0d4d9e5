"""SIGKILL and SIGTERM, resumes that end as uninterrupted runs, logger history, stale
temporary files and one process per run folder (issue: Reliability II).

The interrupted runs are compared with one uninterrupted run (``straight``, shared by the
module): each is the real CLI in its own process (marker e2e)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli_helper import ROOT, cli_env, run_train, with_tiny_run_base
from stnlab.checkpoints import read_checkpoint
from stnlab.data.sources import fetch_lock
from stnlab.run_folder import LOCK_NAME, RunFolderLock
from stnlab.temp_files import remove_stale_temp_files

TINY = [
    "model=stn_cnn",
    "debug=limit",  # 5 training batches, 2 validation and 2 test batches per epoch
    "trainer.max_epochs=3",
    "data.val_size=100",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "trainer.enable_progress_bar=false",
]


def _metrics(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("test_ckpt")
    return metrics


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def straight(fake_mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run (CSV and TensorBoard logs) to compare the others with."""
    run = tmp_path_factory.mktemp("straight") / "run"
    done = run_train(fake_mnist_root, *TINY, "logger=csv", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.mark.e2e
def test_sigkill_mid_epoch_then_auto_resume_matches_a_straight_run(
    fake_mnist_root: Path, straight: Path, tmp_path: Path
) -> None:
    killed = tmp_path / "killed"

    def _cli(data_root: Path, *overrides: str) -> subprocess.CompletedProcess:
        return run_train(data_root, *TINY, "logger=wandb", *overrides)

    # Killed by SIGKILL at global step 7: in epoch 2, after epoch 1's checkpoint.
    proc = _cli(
        fake_mnist_root,
        f"hydra.run.dir={killed}",
        "+callbacks.kill._target_=cli_helper.KillAtStep",
        "+callbacks.kill.step=7",
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not (killed / "metrics.json").exists()
    last = killed / "checkpoints" / "last.ckpt"
    state = read_checkpoint(last)
    assert state["epoch"] == 0 and state["global_step"] == 5
    assert not list(last.parent.glob(".*tmp*"))  # no half-written file left behind

    resumed = _cli(fake_mnist_root, f"hydra.run.dir={killed}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "ckpt_path=last: resuming" in resumed.stderr
    final = read_checkpoint(last)
    assert final["epoch"] == 2 and final["global_step"] == 15
    assert final["stnlab_fit_metrics"]["val/acc_best"] == _metrics(straight)["val/acc_best"]
    # The same numbers to the last digit: weights, optimiser, scheduler, best accuracy,
    # RNGs and the training-distortion generator all came back.
    assert _metrics(killed) == _metrics(straight)
    # One W&B run, continued: two offline run folders with the same run id.
    ids = {p.name.rsplit("-", 1)[-1] for p in (killed / "wandb").glob("offline-run-*")}
    assert len(list((killed / "wandb").glob("offline-run-*"))) == 2 and len(ids) == 1
    assert state["stnlab_wandb_id"] in ids


@pytest.mark.e2e
def test_sigterm_exits_143_names_the_checkpoint_and_resumes_exactly(
    fake_mnist_root: Path, straight: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    term = run_train(
        fake_mnist_root,
        *TINY,
        "logger=[csv,tensorboard]",
        f"hydra.run.dir={run}",
        "+callbacks.term._target_=cli_helper.TermAtStep",
        "+callbacks.term.step=7",
    )
    assert term.returncode == 143, term.stderr[-3000:]
    assert "Traceback" not in term.stderr
    errors = [line for line in term.stderr.splitlines() if "terminated by SIGTERM" in line]
    assert len(errors) == 1
    last = run / "checkpoints" / "last.ckpt"
    assert f"last good checkpoint: {last}" in errors[0]
    assert f"hydra.run.dir={run} ckpt_path=last" in errors[0]
    failure = json.loads((run / "failure.json").read_text())
    assert failure["terminated"] is True and failure["error"] == "TerminatedError"
    assert not (run / "metrics.json").exists()
    assert not (run / LOCK_NAME).exists()  # the lock went with the process

    resumed = run_train(
        fake_mnist_root, *TINY, "logger=[csv,tensorboard]", f"hydra.run.dir={run}", "ckpt_path=auto"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(run) == _metrics(straight)
    assert not (run / "failure.json").exists()

    # The CSV curve runs from step 0 to the end once: the rows before the resumed step
    # (5) were kept, the ones logged after the checkpoint were logged again, not twice.
    def steps(folder: Path) -> list[tuple[int, str]]:
        with open(folder / "csv" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        return sorted((int(r["step"]), r.get("train/loss_step", "")) for r in rows)

    assert steps(run) == steps(straight)
    # TensorBoard: the old event file is kept beside the resumed one, and together they
    # hold every training step.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(files) >= 2  # the first part's file, then the resumed part's
    logged = set()
    for file in files:
        acc = EventAccumulator(str(file))
        acc.Reload()
        if "train/loss_step" in acc.Tags()["scalars"]:
            logged |= {e.step for e in acc.Scalars("train/loss_step")}
    assert logged == set(range(15))


@pytest.mark.e2e
def test_interrupted_final_test_and_finished_rerun_report_the_same_metrics(
    fake_mnist_root: Path, straight: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    term = run_train(
        fake_mnist_root,
        *TINY,
        "logger=csv",
        f"hydra.run.dir={run}",
        "+callbacks.term._target_=cli_helper.TermAtStep",
        "+callbacks.term.test_batch=1",
    )
    assert term.returncode == 143, term.stderr[-3000:]
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 15
    resumed = run_train(
        fake_mnist_root, *TINY, "logger=csv", f"hydra.run.dir={run}", "ckpt_path=auto"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(run) == _metrics(straight)
    assert {k for k in _metrics(run) if k.startswith(("train/", "val/"))}

    again = run_train(
        fake_mnist_root, *TINY, "logger=csv", f"hydra.run.dir={run}", "ckpt_path=auto"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert _metrics(run) == _metrics(straight)


def test_temporary_files_are_removed_other_files_kept(tmp_path: Path) -> None:
    """Under a folder's lock every temporary file there is a killed writer's."""
    (tmp_path / "checkpoints").mkdir()
    stale = [
        tmp_path / "checkpoints" / ".last.ckpt.tmp-123",
        tmp_path / "MNIST" / "raw" / ".train-images-idx3-ubyte.part-456",
        tmp_path / ".metrics.tmp-7.json",
    ]
    stale[1].parent.mkdir(parents=True)
    kept = [tmp_path / "checkpoints" / "best.ckpt", tmp_path / "checkpoints" / ".tmp-notes"]
    for path in [*stale, *kept]:
        path.write_bytes(b"half")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_one_fetch_at_a_time_into_a_data_folder(tmp_path: Path) -> None:
    """A second fetcher waits for the folder's fetch lock; the holder has swept what a
    killed fetch left."""
    left = tmp_path / ".train-images-idx3-ubyte.part-99"
    left.write_bytes(b"half")
    entered: list[str] = []

    def second() -> None:
        with fetch_lock(tmp_path):
            entered.append("second")

    with fetch_lock(tmp_path):
        assert not left.exists()
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and entered == []  # blocked while the first holds it
        entered.append("first done")
    waiter.join(timeout=60)
    assert entered == ["first done", "second"]


@pytest.mark.e2e
def test_a_second_process_on_a_held_run_folder_is_refused(
    fake_mnist_root: Path, tmp_path: Path
) -> None:
    run, ready, go = tmp_path / "run", tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            *with_tiny_run_base(TINY),
            "logger=csv",
            f"hydra.run.dir={run}",
            "+callbacks.pause._target_=cli_helper.PauseAtStep",
            "+callbacks.pause.step=2",
            f"+callbacks.pause.ready={ready}",
            f"+callbacks.pause.go={go}",
        ],
        env=cli_env(fake_mnist_root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), first.communicate()[1][-3000:]
        second = run_train(fake_mnist_root, *TINY, "logger=csv", f"hydra.run.dir={run}")
        assert second.returncode == 1
        assert f"run folder {run} is in use by another running process" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        go.write_text("go")
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert (run / "metrics.json").is_file() and not (run / "failure.json").exists()
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 15


def test_a_lock_file_left_by_a_killed_process_holds_nothing(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid()}))  # kill -9 left it
    with RunFolderLock(tmp_path) as lock:
        assert lock.held
        again = RunFolderLock(tmp_path)  # this process again: the folder is already held
        again.acquire()
        assert again.held
    assert not (tmp_path / LOCK_NAME).exists()
