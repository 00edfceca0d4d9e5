"""Zoom, digit and clutter kept, and rotation undone per class, measured through real
transformers (oracles that know each canvas's θ) on rendered TC and R sets."""

from __future__ import annotations

import pytest
import torch

from pose_oracle import oracle, undo
from stnlab.data.distortions import ClutteredPlacement, RandomSimilarity
from stnlab.geometry import AffineTransform, AttentionTransform
from stnlab.models.pose_recovery import LOGGED, logged_statistics, measure_pose


def cluttered(n: int = 32, seed: int = 0):
    distortion = ClutteredPlacement(60)
    params = distortion.sample(n, torch.Generator().manual_seed(seed), torch.device("cpu"))
    digits = torch.zeros(n, 1, 28, 28)
    digits[..., 6:22, 8:20] = 1.0  # ink in the middle of the digit's box, as MNIST's
    digit, clutter = distortion.render_layers(digits, params)
    record = distortion.pose_record(params, n)
    record.digit_ink, record.clutter_ink = digit, clutter
    return torch.maximum(digit, clutter), record, params


def test_render_is_the_maximum_of_its_layers() -> None:
    images, record, params = cluttered()
    distortion = ClutteredPlacement(60)
    digits = torch.zeros(32, 1, 28, 28)
    digits[..., 6:22, 8:20] = 1.0
    assert torch.equal(distortion.render(digits, params), images)
    assert record.clutter_ink.sum() > 0 and record.digit_ink.sum() > 0


def test_identity_keeps_everything_and_the_digit_box_crop_drops_clutter_outside_it() -> None:
    images, record, _ = cluttered()
    family = AttentionTransform()
    identity = oracle(family, images, family.identity().expand(len(images), -1))
    still = measure_pose(identity, images, record).metrics
    assert still["clutter_kept"] == pytest.approx(1.0)
    assert still["digit_kept"] == pytest.approx(1.0)
    assert still["zoom"] == pytest.approx((28 / 60) ** 2, abs=0.01)

    affine = AffineTransform()
    crop = oracle(affine, images, undo(affine, record, 60))
    crop.output_size = 28
    got = measure_pose(crop, images, record).metrics
    assert got["digit_kept"] == pytest.approx(1.0)
    assert got["zoom"] == pytest.approx(1.0) and got["zoom_std"] == pytest.approx(0.0)
    # the clutter that lands in the box is what the crop keeps: count it pixel by pixel
    corners = record.corners
    ys, xs = torch.meshgrid(torch.arange(60) + 0.5, torch.arange(60) + 0.5, indexing="ij")
    x0, y0 = corners[:, 0, 0].view(-1, 1, 1), corners[:, 0, 1].view(-1, 1, 1)
    in_box = (xs >= x0) & (xs <= x0 + 28) & (ys >= y0) & (ys <= y0 + 28)
    ink = record.clutter_ink[:, 0]
    expected = ((ink * in_box).flatten(1).sum(1) / ink.flatten(1).sum(1)).mean()
    assert got["clutter_kept"] == pytest.approx(float(expected), abs=1e-6)
    assert got["clutter_kept"] < still["clutter_kept"]


def test_rotation_undone_per_class_and_without_0_1_8() -> None:
    n = 400
    distortion = RandomSimilarity(28, max_angle=90.0)
    params = distortion.sample(n, torch.Generator().manual_seed(1), torch.device("cpu"))
    images = distortion.render(torch.rand(n, 1, 28, 28), params)
    record = distortion.pose_record(params, n)
    labels = torch.arange(n) % 10
    affine = AffineTransform()
    upright = undo(affine, record, 28)
    identity = affine.identity().expand(n, -1)
    # the transformer turns 3s upright and leaves every other class as it is
    theta = torch.where((labels == 3).view(-1, 1), upright, identity)
    got = measure_pose(oracle(affine, images, theta), images, record, labels=labels).metrics
    assert got["rotation_undone_3"] == pytest.approx(1.0, abs=1e-4)
    for k in (0, 4, 9):
        assert got[f"rotation_undone_{k}"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < got["rotation_undone_upright"] < got["rotation_undone_3"]
    everything = measure_pose(oracle(affine, images, upright), images, record, labels=labels)
    assert everything.metrics["rotation_undone"] == pytest.approx(1.0, abs=1e-4)
    assert everything.metrics["rotation_undone_upright"] == pytest.approx(1.0, abs=1e-4)


def test_what_does_not_apply_is_not_logged() -> None:
    images, record, _ = cluttered()
    family = AttentionTransform()
    identity = oracle(family, images, family.identity().expand(len(images), -1))
    labels = torch.arange(len(images)) % 10
    logged = logged_statistics(measure_pose(identity, images, record, labels=labels).metrics)
    # TC has no rotation: no rotation figures; it has clutter: both ink figures
    assert not any(key.startswith("rotation_undone") for key in logged)
    assert {"zoom", "zoom_std", "digit_kept", "clutter_kept"} <= set(logged) <= set(LOGGED)
    record.clutter_ink = record.digit_ink = None  # a set without clutter
    plain = logged_statistics(measure_pose(identity, images, record).metrics)
    assert "clutter_kept" not in plain and plain["digit_kept"] == pytest.approx(1.0)
