"""Numerical failure stops training with a clear message and keeps the last good checkpoint."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from stnlab.checkpoints import read_checkpoint
from stnlab.data.datamodule import DigitsDataModule
from stnlab.errors import NonFiniteLossError, TransformerCollapseError
from stnlab.geometry import AffineTransform, base_grid, grid_coverage
from stnlab.tasks import train

MakeCfg = Callable[..., DictConfig]


def test_grid_coverage_of_identity_zoom_and_shift() -> None:
    grid = base_grid(10, 10).unsqueeze(0)
    assert grid_coverage(grid).tolist() == [1.0]
    assert grid_coverage(grid * 4).item() == pytest.approx(0.04)  # zoomed out 4×: 2×2 of 10×10
    assert grid_coverage(grid + 3).item() == 0.0  # slid off the input


def test_nan_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(
    make_cfg: MakeCfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = DigitsDataModule.distort_train_batch
    calls = {"n": 0}

    def poisoned(self: DigitsDataModule, digits: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        images = original(self, digits)
        return images * math.nan if calls["n"] == 8 else images  # global step 7

    monkeypatch.setattr(DigitsDataModule, "distort_train_batch", poisoned)
    cfg = make_cfg("model=stn_cnn", "debug=limit", "trainer.max_epochs=3")
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg)
    message = str(info.value)
    assert "the training loss became non-finite at global step 7 (epoch 1, batch 2)" in message
    assert "no checkpoint was written after it" in message
    assert "model.loc_lr_mult=1.0" in message and "model.optimizer.lr=0.02" in message
    out = Path(cfg.paths.output_dir)
    last = out / "checkpoints" / "last.ckpt"
    assert f"The last good checkpoint is kept: {last}" in message
    ckpt = read_checkpoint(last)
    assert ckpt["global_step"] == 5  # written after epoch 1, not after the NaN
    assert all(torch.isfinite(w).all() for w in ckpt["state_dict"].values())
    failure = json.loads((out / "failure.json").read_text())
    assert failure["error"] == "NonFiniteLossError" and "global step 7" in failure["message"]
    assert not (out / "metrics.json").exists()


def test_collapsed_transformer_stops_training(
    make_cfg: MakeCfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A transformer that starts zoomed out 50× and cannot learn (loc LR 0) stays collapsed.
    monkeypatch.setattr(
        AffineTransform, "window", lambda self, scale: torch.tensor([50.0, 0, 0, 0, 50.0, 0])
    )
    cfg = make_cfg(
        "model=stn_cnn",
        "debug=limit",
        "model.loc_lr_mult=0",
        "callbacks.collapse.check_every_n_steps=1",
        "callbacks.collapse.patience=2",
    )
    with pytest.raises(TransformerCollapseError) as info:
        train(cfg)
    message = str(info.value)
    assert "collapsed at global step 1 (epoch 0)" in message
    assert "less than 2% of the input" in message and "model.loc_lr_mult=0;" in message
    assert "No checkpoint had been written yet." in message


def test_a_healthy_transformer_is_not_flagged(make_cfg: MakeCfg) -> None:
    cfg = make_cfg(
        "model=stn_cnn",
        "debug=limit",
        "trainer.max_epochs=1",
        "callbacks.collapse.check_every_n_steps=1",
        "callbacks.collapse.patience=1",
    )
    assert 0.0 <= train(cfg)["test/acc"] <= 1.0
