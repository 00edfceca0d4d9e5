"""Measurements of distortion variants on hand-made cases, and the gallery writing them."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from stnlab.analysis.distortion_stats import (
    distortion_statistics,
    foreshortening,
    ink_lost,
)
from stnlab.config import compose_config
from stnlab.data.distortions import RandomSimilarity
from stnlab.geometry import PoseRecord, apply_homography, homography_from_points
from stnlab.tasks.gallery import gallery


def _placed(shift_px: float, canvas: int = 28) -> tuple[torch.Tensor, PoseRecord, torch.Tensor]:
    """A full 28×28 block of ink shifted ``shift_px`` to the right on a ``canvas``."""
    digits = torch.ones(1, 1, 28, 28)
    place = RandomSimilarity(canvas, max_angle=0.0)
    params = {
        "angle": torch.zeros(1),
        "scale": torch.ones(1),
        "shift": torch.tensor([[shift_px, 0.0]]),
    }
    return digits, place.pose_record(params, 1), place.render(digits, params)


def test_ink_lost_counts_what_the_canvas_edge_cuts() -> None:
    digits, pose, _ = _placed(0.0)
    assert float(ink_lost(digits, pose, 28)) == pytest.approx(0.0, abs=1e-4)
    digits, pose, _ = _placed(14.0)  # half the block beyond the right edge
    assert float(ink_lost(digits, pose, 28)) == pytest.approx(0.5, abs=0.02)
    digits, pose, _ = _placed(7.0, canvas=42)  # 42 px canvas: 28 + 7 still inside
    assert float(ink_lost(digits, pose, 42)) == pytest.approx(0.0, abs=1e-4)
    no_homography = PoseRecord(pose.corners, None, 28)
    assert math.isnan(float(ink_lost(digits, no_homography, 42)))


def test_foreshortening_is_the_spread_of_local_area_scale() -> None:
    square = torch.tensor([[[0.0, 0.0], [28.0, 0.0], [28.0, 28.0], [0.0, 28.0]]])
    # the left side shrunk to half its height: a perspective view of the box
    trapezoid = torch.tensor([[[0.0, 7.0], [28.0, 0.0], [28.0, 28.0], [0.0, 21.0]]])
    theta = homography_from_points(square.double(), trapezoid.double())
    matrix = torch.cat((theta, torch.ones(1, 1, dtype=theta.dtype)), dim=1).view(1, 3, 3)
    # local area scale by finite differences at the four corners
    areas = []
    for corner in square[0].double():
        e = 1e-4
        points = torch.stack(
            (corner, corner + torch.tensor([e, 0.0]), corner + torch.tensor([0.0, e]))
        )
        a, bx, by = apply_homography(matrix, points[None])[0]
        jx, jy = (bx - a) / e, (by - a) / e
        areas.append(abs(float(jx[0] * jy[1] - jx[1] * jy[0])))
    expected = max(areas) / min(areas)
    assert expected > 2  # a strong perspective
    assert float(foreshortening(matrix, 28)) == pytest.approx(expected, rel=1e-3)
    assert float(foreshortening(torch.eye(3)[None] * 2, 28)) == pytest.approx(1.0)


def test_statistics_of_a_shifted_digit_and_of_hand_made_clutter() -> None:
    digits, pose, canvases = _placed(14.0)
    stats = distortion_statistics(digits, canvases, pose)
    assert stats["ink_lost_mean"] == pytest.approx(0.5, abs=0.02)
    assert stats["ink_lost_over_10pc"] == 1.0
    assert stats["foreshortening_median"] == pytest.approx(1.0)
    assert stats["scale_min"] == pytest.approx(1.0) and stats["angle_std"] == pytest.approx(0)
    assert math.isnan(stats["clutter_ink"])

    digit = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    digit[..., 0:10, 0:10] = 255  # 100 ink pixels
    clutter = torch.zeros_like(digit)
    clutter[..., 7:13, 0:6] = 255  # a 6×6 patch, its top 3 rows on the digit
    cluttered = PoseRecord(pose.corners, pose.homography, 28, digit, clutter)
    stats = distortion_statistics(digits, canvases, cluttered)
    assert stats["clutter_ink"] == pytest.approx(36.0)
    assert stats["clutter_to_digit_ink"] == pytest.approx(0.36)
    assert stats["clutter_on_digit"] == pytest.approx(18 / 100)


def test_gallery_writes_the_measurements_of_each_variant(fake_mnist: Path, tmp_path: Path) -> None:
    variants = "variants=[rotated,elastic,cluttered,addition]"
    cfg = compose_config("gallery", [variants], output_dir=tmp_path, data_dir=fake_mnist)
    paths = gallery(cfg)
    out = Path(cfg.out_dir)
    assert out / "distortions.md" in paths and out / "addition.png" in paths
    with open(out / "distortions.csv", newline="") as f:
        rows = {row["variant"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["rotated", "elastic", "cluttered"]  # addition: two digits an image
    assert 40 < float(rows["rotated"]["angle_std"]) < 70  # uniform on ±90°: 54.5°
    assert rows["elastic"]["ink_lost_mean"] == "nan"  # in place, no homography
    assert float(rows["cluttered"]["clutter_ink"]) > 0
    assert float(rows["cluttered"]["ink_lost_mean"]) == pytest.approx(0, abs=1e-3)
    table = (out / "distortions.md").read_text()
    assert "| elastic | – | – |" in table
