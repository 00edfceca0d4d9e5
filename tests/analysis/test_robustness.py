"""Robustness curves: placement, flat curves for invariant models, files and logging."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn

from stnlab.analysis.robustness import place_digits, robustness_curve, shift_directions
from stnlab.errors import ConfigError
from stnlab.tasks import robustness, train

RADII = torch.arange(10) * 0.9 + 3.0  # class k: a disk of radius 3 + 0.9 k pixels


def disks(n: int = 60, centre_y: float = 13.5, radii: Tensor = RADII) -> tuple[Tensor, Tensor]:
    """``(n, 1, 28, 28)`` disks whose radius codes the label; centred: rotation-invariant."""
    labels = torch.arange(n) % 10
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    r = ((xs - 13.5) ** 2 + (ys - centre_y) ** 2).sqrt()
    images = (r[None] <= radii[labels, None, None]).float()
    return images.unsqueeze(1), labels


class InkClassifier(nn.Module):
    """Reads the pattern back exactly: the class whose disk area is nearest the ink mass."""

    def __init__(self, references: Tensor, top_half_only: bool = False) -> None:
        super().__init__()
        self.top_half_only = top_half_only
        self.register_buffer("areas", self._ink(references))

    def _ink(self, x: Tensor) -> Tensor:
        return (x[:, :, :14] if self.top_half_only else x).sum(dim=(1, 2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return -(self._ink(x)[:, None] - self.areas[None]).abs()


def test_identity_classifier_of_invariant_pattern_gives_a_flat_curve() -> None:
    images, labels = disks()
    angles = list(range(-180, 181, 15))
    model = InkClassifier(images[:10])
    rows = robustness_curve(model, images, labels, "angle", angles, 28)
    assert [r["value"] for r in rows] == [float(a) for a in angles]
    assert {r["error_pct"] for r in rows} == {0.0}  # flat, and right everywhere
    # the check can fail: small disks high up, read from the top half only, are right
    # upright and wrong upside down
    high, high_labels = disks(centre_y=7.0, radii=torch.arange(10) * 0.5 + 1.0)
    top = InkClassifier(high[:10], top_half_only=True)
    curve = robustness_curve(top, high, high_labels, "angle", [0, 180], 28)
    assert curve[0]["error_pct"] == 0.0 and curve[1]["error_pct"] > 50.0


def test_place_digits_moves_one_factor() -> None:
    images, _ = disks(10)
    same = place_digits(images, "angle", 0.0, 28, shift_directions(10))
    assert torch.allclose(same, images, atol=1e-5)
    bigger = place_digits(images, "scale", 1.5, 28, shift_directions(10))
    assert bigger.sum() == pytest.approx(1.5**2 * images.sum().item(), rel=0.05)
    canvas = place_digits(images, "shift", 5.0, 42, shift_directions(10, seed=3))
    ys, xs = torch.meshgrid(torch.arange(42.0), torch.arange(42.0), indexing="ij")
    mass = canvas[:, 0].sum(dim=(1, 2))
    cx = (canvas[:, 0] * xs).sum(dim=(1, 2)) / mass - 20.5
    cy = (canvas[:, 0] * ys).sum(dim=(1, 2)) / mass - 20.5
    assert torch.allclose((cx**2 + cy**2).sqrt(), torch.full((10,), 5.0), atol=0.1)
    with pytest.raises(ValueError, match="factor='tilt'"):
        place_digits(images, "tilt", 1.0, 28, shift_directions(10))


def test_robustness_task_writes_csv_png_and_logs(
    make_cfg: Callable[..., DictConfig],
    make_task_cfg: Callable[..., DictConfig],
    tmp_path: Path,
) -> None:
    ckpts = []
    for model in ("cnn", "stn_cnn"):
        cfg = make_cfg(
            f"model={model}",
            "data=rts",
            "debug=limit",
            "trainer.max_epochs=1",  # a checkpoint is all the curves need
            output_dir=tmp_path / model,
        )
        ckpts.append(train(cfg)["test_ckpt"])
    cfg = make_task_cfg(
        "robustness",
        f"ckpts=[{ckpts[0]},{ckpts[1]}]",
        "angle.num=5",
        "scale.num=3",
        "shift.num=3",
        "num_samples=50",
    )
    rows = robustness(cfg)
    out = Path(cfg.paths.output_dir)
    with open(out / "robustness.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == 2 * (5 + 3 + 3)
    assert {r["model"] for r in table} == {"CNN (RTS)", "ST-CNN Aff (RTS)"}
    shifts = sorted({float(r["value"]) for r in table if r["factor"] == "shift"})
    assert shifts == [0.0, 3.5, 7.0]  # 42×42 canvas: max(7, (42 - 28) / 2)
    assert all(0 <= float(r["error_pct"]) <= 100 and r["samples"] == "50" for r in table)
    assert (out / "robustness.png").stat().st_size > 10_000
    with open(out / "csv" / "metrics.csv", newline="") as f:
        logged = list(csv.DictReader(f))[-1]
    assert "robustness/CNN (RTS)/angle_mean_err" in logged
    with open_dict(cfg):
        cfg.factors = "angle"  # one factor, given as a plain string
    assert {r["factor"] for r in robustness(cfg)} == {"angle"}
    with open_dict(cfg):
        cfg.factors = ["angle", "tilt"]
    with pytest.raises(ConfigError, match=r"factors=\['tilt'\] unknown"):
        robustness(cfg)
    with open_dict(cfg):
        cfg.factors = ["scale"]
        cfg.scale.start = 0
    with pytest.raises(ConfigError, match=r"scale\.start=0.*must be > 0"):
        robustness(cfg)


@pytest.mark.slow
def test_real_cnn_curve_is_not_flat(tmp_path: Path) -> None:
    """A CNN trained on upright real MNIST (one epoch) fails on rotated digits, through
    the real CLIs: src/train.py, then src/robustness.py on its checkpoint."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "WANDB_MODE": "offline"}
    run = tmp_path / "train"
    common = ["logger=csv", f"paths.root_dir={root}"]
    subprocess.run(
        [
            sys.executable,
            str(root / "src" / "train.py"),
            "model=cnn",
            "data=mnist",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            *common,
            f"hydra.run.dir={run}",
        ],
        check=True,
        env=env,
        cwd=root,
        timeout=1800,
    )
    out = tmp_path / "robustness"
    subprocess.run(
        [
            sys.executable,
            str(root / "src" / "robustness.py"),
            f"ckpts=[{run / 'checkpoints' / 'best.ckpt'}]",
            "factors=[angle]",
            "angle.num=9",
            "num_samples=2000",
            *common,
            f"hydra.run.dir={out}",
        ],
        check=True,
        env=env,
        cwd=root,
        timeout=1800,
    )
    with open(out / "robustness.csv", newline="") as f:
        errors = {float(r["value"]): float(r["error_pct"]) for r in csv.DictReader(f)}
    assert errors[0.0] < 5.0  # upright: what it was trained on
    assert errors[180.0] > errors[0.0] + 30.0 and errors[-90.0] > errors[0.0] + 30.0
