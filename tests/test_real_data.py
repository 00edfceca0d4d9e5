"""Real MNIST (fetched into data/ on first use): the issue's acceptance run. `pytest -m slow`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_stn_cnn_two_epochs_on_rotated_mnist(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "model=stn_cnn",
        "data=rotated",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"paths.root_dir={ROOT}",
        f"hydra.run.dir={run_dir}",
    ]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, timeout=1800)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/acc"] >= 0.95
    assert (run_dir / "checkpoints" / "best.ckpt").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert list((run_dir / "transform_grids").glob("epoch_*.png"))
    assert list(run_dir.glob("wandb/offline-run-*/files/media/images/transform_grid_*.png"))
