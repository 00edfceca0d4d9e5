"""What a run prints and keeps in its ``train.log``: stnlab's and Lightning's lines, one
progress line per validation off a terminal, the final metrics; none of the libraries'
noise (issue: Fits the hands of its users, logs a person can read)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from cli_helper import ROOT, cli_env, with_tiny_run_base
from stnlab.callbacks.epoch_log import EpochLog, _duration
from stnlab.tasks import train
from stnlab.tasks.train import terminal_display

LINE = re.compile(
    r"^epoch (\d)/2  step (\d+)/10  train loss \d+\.\d{3}  val acc [01]\.\d{4}  "
    r"pose undone -?\d+\.\d{2}  \d+s elapsed, \d+s left$"
)
NOISE = (
    "anonymous setting",  # W&B, about Lightning's anonymous=None
    "litlogger",  # Lightning's advertisement
    "LeafSpec",  # torch's deprecation, raised inside Lightning
    "already configured with model summary",  # a second summary callback
)


def test_durations_read_as_a_person_writes_them() -> None:
    assert [_duration(s) for s in (0, 9.4, 75, 3725, -3)] == ["0s", "9s", "1m15s", "1h02m", "0s"]


def test_off_a_terminal_each_validation_logs_one_progress_line(
    make_cfg: Callable[..., DictConfig],
    caplog: pytest.LogCaptureFixture,
    recwarn: pytest.WarningsRecorder,
) -> None:
    cfg = make_cfg("debug=limit", "trainer.max_epochs=2", "trainer.enable_progress_bar=false")
    with caplog.at_level(logging.INFO):
        metrics = train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "stnlab.callbacks.epoch_log"]
    assert [LINE.match(line).group(1, 2) for line in lines] == [("1", "5"), ("2", "10")], lines
    assert lines[-1].endswith(", 0s left")
    messages = [r.getMessage() for r in caplog.records]
    final = f"final metrics: test/err {metrics['test/err']:.4g}"
    assert any(m.startswith(final) for m in messages), messages
    assert f"run folder: {cfg.paths.output_dir}" in messages
    assert any(m.startswith("GPU available") for m in messages)  # Lightning's, via logging
    assert not [m for m in messages if any(n in m for n in NOISE)]
    assert not [w for w in recwarn if "LeafSpec" in str(w.message)]


def test_a_progress_bar_replaces_the_lines_and_a_sweep_prints_one_model_table(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg("trainer.enable_progress_bar=true", "trainer.enable_model_summary=true")
    names = [type(c).__name__ for c in terminal_display(cfg.trainer)]
    assert names == ["RichProgressBar", "RichModelSummary"]
    cfg.trainer.enable_progress_bar = False
    later_job = [type(c) for c in terminal_display(cfg.trainer, first_job=False)]
    assert later_job == [EpochLog]


@pytest.mark.e2e
def test_train_log_holds_what_the_console_shows_without_the_noise(
    fake_mnist_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    overrides = with_tiny_run_base(
        ["debug=limit", "trainer.max_epochs=2", "data.val_size=100", "data.batch_size=32"]
    )
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *overrides, "logger=wandb"]
    env = cli_env(fake_mnist_root, WANDB_SILENT="false")  # W&B's own warnings shown
    proc = subprocess.run(
        [*cmd, f"hydra.run.dir={run}"], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    log = (run / "train.log").read_text()
    for text in ("epoch 1/2  step 5/10", "epoch 2/2  step 10/10", "`Trainer.fit` stopped"):
        assert text in log and text in console, text
    assert "final metrics: test/err" in log and f"run folder: {run}" in log
    assert not [n for n in NOISE if n in console or n in log]
    assert console.count("Trainable params") == 1
