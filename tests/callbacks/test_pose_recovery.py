"""Pose recovery of real transformers: oracles score 1, the identity 0, half a turn what
arithmetic says; the callback logs val/pose/* every epoch and plots with the grids."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor

from pose_oracle import OracleLocNet, oracle, undo
from stnlab.callbacks.pose import PoseRecoveryCallback, pose_scatter_image
from stnlab.data.distortions import (
    ClutteredPlacement,
    Distortion,
    RandomElastic,
    RandomProjective,
    RandomSimilarity,
)
from stnlab.geometry import (
    AffineTransform,
    PoseRecord,
    ProjectiveTransform,
    TPSTransform,
    box_corners,
    circular_std,
    placement_theta,
    pose_statistics,
)
from stnlab.models import CNN, ICSpatialTransformer, SpatialTransformer, STNClassifier
from stnlab.models.pose_recovery import LOGGED, logged_statistics, measure_pose
from stnlab.tasks import train

DISTORTIONS: dict[str, Distortion] = {
    "rotated": RandomSimilarity(28, max_angle=90.0),
    "rts": RandomSimilarity(42, max_angle=45.0, scale=(0.7, 1.2), max_shift=None),
    "projective": RandomProjective(28),
    "translated": RandomSimilarity(60, max_angle=0.0, max_shift=None),
    "cluttered": ClutteredPlacement(60),
}


def rendered(name: str, n: int = 64, seed: int = 0) -> tuple[Tensor, PoseRecord]:
    distortion = DISTORTIONS[name] if name in DISTORTIONS else RandomElastic(28)
    params = distortion.sample(n, torch.Generator().manual_seed(seed), torch.device("cpu"))
    digits = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed + 1))
    return distortion.render(digits, params), distortion.pose_record(params, n)


CASES = [
    ("rotated", "affine"),
    ("rotated", "tps"),
    ("rts", "affine"),
    ("rts", "projective"),
    ("rts", "tps"),
    ("projective", "projective"),
    ("translated", "affine"),
    ("cluttered", "affine"),
]
FAMILY = {"affine": AffineTransform, "projective": ProjectiveTransform, "tps": TPSTransform}


@pytest.mark.parametrize(("data", "family_name"), CASES)
def test_exact_inverse_scores_1_and_identity_scores_0(data: str, family_name: str) -> None:
    images, record = rendered(data)
    family = FAMILY[family_name]()
    canvas = images.shape[-1]
    perfect = measure_pose(oracle(family, images, undo(family, record, canvas)), images, record)
    assert perfect.metrics["undone"] == pytest.approx(1.0, abs=1e-4)
    assert perfect.metrics["angle_std_after"] < 0.05
    assert perfect.metrics["shift_std_after"] < 1e-3
    identity = oracle(family, images, family.identity().expand(len(images), -1))
    still = measure_pose(identity, images, record).metrics
    assert still["undone"] == pytest.approx(0.0, abs=1e-6)
    for factor in ("angle_std", "log_scale_std", "shift_std"):
        assert still[f"{factor}_after"] == pytest.approx(still[f"{factor}_before"], abs=1e-4)


def test_before_statistics_are_the_applied_pose() -> None:
    distortion = DISTORTIONS["rts"]
    params = distortion.sample(300, torch.Generator().manual_seed(3), torch.device("cpu"))
    images = distortion.render(torch.rand(300, 1, 28, 28), params)
    record = distortion.pose_record(params, 300)
    family = AffineTransform()
    stats = measure_pose(oracle(family, images, family.identity().expand(300, -1)), images, record)
    shift = params["shift"] - params["shift"].mean(0)
    assert stats.metrics["angle_std_before"] == pytest.approx(
        circular_std(params["angle"]).item(), rel=1e-4
    )
    assert stats.metrics["log_scale_std_before"] == pytest.approx(
        params["scale"].log().std(unbiased=False).item(), rel=1e-4
    )
    assert stats.metrics["shift_std_before"] == pytest.approx(
        shift.square().sum(1).mean().sqrt().item(), rel=1e-4
    )


def test_undoing_half_of_each_rotation_scores_what_arithmetic_says() -> None:
    distortion = DISTORTIONS["rotated"]
    n = 400
    params = distortion.sample(n, torch.Generator().manual_seed(4), torch.device("cpu"))
    images = distortion.render(torch.rand(n, 1, 28, 28), params)
    record = distortion.pose_record(params, n)
    affine = AffineTransform()
    half = placement_theta(params["angle"] / 2, params["scale"], params["shift"], 28, 28)
    # output → the digit's frame (where it shows turned by half its angle) → input canvas
    to_canvas = undo(affine, record, 28)
    theta = (affine.to_matrix(to_canvas) @ affine.to_matrix(half.double()))[:, :2].flatten(1)
    got = measure_pose(oracle(affine, images, theta), images, record).metrics

    def resultant(angle: Tensor) -> float:
        rad = torch.deg2rad(angle.double())
        return float(torch.complex(rad.cos(), rad.sin()).mean().abs())

    a = params["angle"]
    expected = 1 - math.sqrt(1 - resultant(a / 2) ** 2) / math.sqrt(1 - resultant(a) ** 2)
    assert got["undone"] == pytest.approx(expected, abs=1e-5)
    assert got["angle_std_after"] == pytest.approx(circular_std(a / 2).item(), abs=1e-3)

    doubled = placement_theta(2 * params["angle"], params["scale"], params["shift"], 28, 28)
    theta = (affine.to_matrix(to_canvas) @ affine.to_matrix(doubled.double()))[:, :2]
    worse = measure_pose(oracle(affine, images, theta.flatten(1)), images, record).metrics
    assert worse["undone"] < 0  # turned by twice the angle: more variation than before


def test_elastic_identity_scores_0() -> None:
    images, record = rendered("elastic")
    assert record.homography is None
    family = AffineTransform()
    got = measure_pose(oracle(family, images, family.identity().expand(64, -1)), images, record)
    assert got.metrics["undone"] == pytest.approx(0.0, abs=1e-6)
    assert got.metrics["shift_std_before"] > 0


def test_ic_stn_and_parallel_transformers_use_their_warp_and_the_first_copy() -> None:
    images, record = rendered("rts")
    affine = AffineTransform()
    theta = undo(affine, record, 42)
    ic = oracle(affine, images, theta, cls=ICSpatialTransformer, steps=1)
    assert measure_pose(ic, images, record).metrics["undone"] == pytest.approx(1.0, abs=1e-4)
    both = torch.cat((theta, affine.identity().expand(len(theta), -1)), dim=1)
    parallel = oracle(affine, images, both, num_transformers=2)
    assert measure_pose(parallel, images, record).metrics["undone"] == pytest.approx(1, abs=1e-4)


def test_resized_canvases_measure_the_same() -> None:
    """eval resizes other variants' canvases to the model's input: poses are normalised."""
    images, record = rendered("rts")
    family = AffineTransform()
    small = torch.nn.functional.interpolate(images, size=(28, 28), mode="bilinear")
    at_42 = measure_pose(oracle(family, images, undo(family, record, 42)), images, record)
    at_28 = measure_pose(
        oracle(family, small, undo(family, record, 42)), small, record, canvas_size=42
    )
    assert at_28.metrics["undone"] == pytest.approx(at_42.metrics["undone"], abs=1e-6)
    assert at_28.metrics["shift_std_before"] == pytest.approx(
        at_42.metrics["shift_std_before"] * 28 / 42, rel=1e-6
    )


def test_scatter_is_a_uint8_image_with_the_centres_before_and_after() -> None:
    images, record = rendered("rts")
    family = AffineTransform()
    measured = measure_pose(oracle(family, images, undo(family, record, 42)), images, record)
    image = pose_scatter_image(measured, "test")
    assert image.dtype == np.uint8  # W&B saves float images as black PNGs
    assert image.ndim == 3 and image.shape[2] == 3 and image.min() < 128 < image.max()
    # the shift panel's points: each digit's centre, spread before, one place after the
    # exact inverse (pixels from the middle)
    *_, before = measured.residual_pose("before")
    *_, after = measured.residual_pose("after")
    assert torch.allclose(before, measured.before.mean(dim=1))
    assert before.std(dim=0).min() > 1.0 and after.std(dim=0).max() < 1e-3


@pytest.mark.parametrize("where", ["none", "features"])
def test_not_applicable_is_said_once_and_logs_nothing(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    transformer = None
    if where == "features":
        loc_net = OracleLocNet(torch.zeros(1, 4), torch.zeros(1, 6))
        transformer = SpatialTransformer(loc_net, AffineTransform())
    at = "input" if transformer is None else where
    net = STNClassifier(CNN(1, 28, 10), transformer, transformer_at=at)
    logged: list[str] = []
    module = SimpleNamespace(net=net, log=lambda key, *a, **k: logged.append(key))
    trainer = SimpleNamespace(sanity_checking=False, datamodule=None)
    callback = PoseRecoveryCallback(dirpath="unused")
    with caplog.at_level(logging.INFO, logger="stnlab.callbacks.pose"):
        callback.on_validation_epoch_end(trainer, module)
        callback.on_validation_epoch_end(trainer, module)
    assert logged == []
    lines = [r.getMessage() for r in caplog.records if "pose recovery" in r.getMessage()]
    assert len(lines) == 1 and "does not apply" in lines[0]
    assert ("feature maps" in lines[0]) == (where == "features")


def test_measures_the_digits_validation_covered() -> None:
    def trainer(batches: list[float], world_size: int = 1) -> SimpleNamespace:
        return SimpleNamespace(num_val_batches=batches, world_size=world_size)

    dm = SimpleNamespace(eval_batch_size=256)
    covered = PoseRecoveryCallback._covered
    assert covered(trainer([2]), dm, 5000) == 512  # limit_val_batches=2
    assert covered(trainer([2], world_size=2), dm, 5000) == 1024  # every rank's shard
    assert covered(trainer([20]), dm, 5000) == 5000
    assert covered(trainer([float("inf")]), dm, 5000) == 5000
    assert covered(trainer([0]), dm, 5000) == 5000  # no validation ran: a plot measures all


def test_logged_statistics_leave_out_undone_and_rotation_only_without_spread() -> None:
    square = box_corners(28).expand(5, 4, 2)
    upright = pose_statistics(box_corners(28), square, square)
    pose_keys = {key for key in LOGGED if key in upright}
    assert set(logged_statistics(upright)) == pose_keys - {"undone", "rotation_undone"}
    turned = torch.stack((square[0], square[0].flip(0)))
    broken = pose_statistics(box_corners(28), turned, torch.full_like(turned, math.nan))
    kept = logged_statistics(broken)
    assert set(kept) >= pose_keys - {"rotation_undone"}
    assert math.isnan(kept["undone"])  # shown, not hidden


def test_bad_every_n_epochs_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"callbacks.pose.every_n_epochs must be >= 1, got 0"):
        PoseRecoveryCallback(dirpath="x", every_n_epochs=0)


def test_short_run_logs_pose_every_epoch_and_plots_it(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg("model=stn_cnn", "debug=limit", "logger=[csv,wandb]")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    with open(out / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/pose/undone")]
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # with the validation metrics, each epoch
    for row in rows:
        assert row["val/acc"]  # on the same line as the validation metrics
        for key in LOGGED:
            if key != "clutter_kept":  # rotated digits carry no clutter
                assert math.isfinite(float(row[f"val/pose/{key}"])), key
        assert not row.get("val/pose/clutter_kept")
        assert 0 < float(row["val/pose/digit_kept"]) <= 1.0
        assert float(row["val/pose/undone"]) <= 1.0
        assert float(row["val/pose/angle_std_before"]) > 20  # rotated: uniform on ±90°
    assert "val/pose/undone" in metrics
    pngs = sorted((out / "pose").glob("epoch_*.png"))
    assert [p.name for p in pngs] == ["epoch_001.png", "epoch_002.png"]  # the grids' schedule
    assert Image.open(pngs[0]).mode == "RGB"
    runs = list((out / "wandb").glob("offline-run-*"))
    media = list((runs[0] / "files" / "media" / "images").glob("pose_scatter_*.png"))
    assert len(media) == 2
    assert Image.open(media[0]).getextrema() != ((0, 0), (0, 0), (0, 0))  # not all black
