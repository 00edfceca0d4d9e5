"""Pose recovery math: corner mapping, inverse warps, residual similarity, spreads."""

from __future__ import annotations

import math

import pytest
import torch

from stnlab.geometry import (
    FAMILIES,
    AffineTransform,
    TPSTransform,
    base_grid,
    box_corners,
    circular_std,
    invert_points,
    make_family,
    map_points,
    placement_theta,
    pose_spread,
    pose_statistics,
    similarity_fit,
)


def _random_theta(name: str, batch: int, gen: torch.Generator) -> torch.Tensor:
    family = make_family(name)
    noise = torch.randn(batch, family.num_params, generator=gen)
    scale = {"projective": 0.05, "tps": 0.05}.get(name, 0.15)
    return family.identity() + scale * noise


def _rotated(angle_deg: torch.Tensor, size: float = 28.0) -> torch.Tensor:
    """Corners ``(N, 4, 2)`` of a ``size`` box turned by ``angle_deg`` (CCW on screen, y down)."""
    rad = torch.deg2rad(angle_deg.double())
    cos, sin = torch.cos(rad), torch.sin(rad)
    rot = torch.stack((torch.stack((cos, sin), -1), torch.stack((-sin, cos), -1)), -2)
    return box_corners(size, dtype=torch.float64) @ rot.transpose(1, 2)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_map_points_is_the_grid_at_pixel_centres(name: str) -> None:
    family = make_family(name)
    theta = _random_theta(name, 3, torch.Generator().manual_seed(0))
    grid = family.grid(theta, (7, 9))
    points = base_grid(7, 9).view(1, -1, 2).expand(3, -1, -1)
    assert torch.allclose(map_points(family, theta, points), grid.view(3, -1, 2), atol=1e-5)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_invert_points_undoes_map_points(name: str) -> None:
    family = make_family(name)
    gen = torch.Generator().manual_seed(1)
    theta = _random_theta(name, 4, gen).double()
    targets = (torch.rand(4, 6, 2, generator=gen, dtype=torch.float64) * 2 - 1) * 1.2
    found = invert_points(family, theta, targets)
    assert (map_points(family, theta, found) - targets).abs().max() < 1e-8


def test_tps_inverse_is_exact_for_affine_control_motion() -> None:
    family = TPSTransform(grid_size=4)
    affine = torch.tensor([[0.8, -0.3, 0.1], [0.25, 0.9, -0.2]], dtype=torch.float64)
    control = family.control.double()
    theta = (control @ affine[:, :2].T + affine[:, 2]).reshape(1, -1)
    targets = torch.tensor([[[-1.5, -1.0], [1.0, 1.5], [0.3, -0.7]]], dtype=torch.float64)
    expected = (targets - affine[:, 2]) @ torch.linalg.inv(affine[:, :2]).T
    assert torch.allclose(invert_points(family, theta, targets, steps=0), expected, atol=1e-9)


def test_similarity_fit_recovers_angle_scale_and_shift() -> None:
    angle = torch.tensor([-179.0, -45.0, 0.0, 30.0, 90.0, 179.5], dtype=torch.float64)
    scale = torch.tensor([0.5, 0.7, 1.0, 1.2, 2.0, 1.1], dtype=torch.float64)
    shift = torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    corners = _rotated(angle) * scale.view(-1, 1, 1) + shift.unsqueeze(1)
    got_angle, got_log_scale, got_shift = similarity_fit(box_corners(28), corners)
    assert torch.allclose(got_angle, angle, atol=1e-9)
    assert torch.allclose(got_log_scale, scale.log(), atol=1e-12)
    assert torch.allclose(got_shift, shift, atol=1e-12)


def test_similarity_fit_of_placement_matches_the_applied_pose() -> None:
    """The digit → canvas map of :func:`placement_theta`, fitted, gives back its pose."""
    angle, scale = torch.tensor([25.0, -60.0]), torch.tensor([0.8, 1.15])
    shift = torch.tensor([[3.0, -2.0], [-5.5, 4.0]])
    theta = placement_theta(angle, scale, shift, 28, 42)
    to_canvas = torch.linalg.inv(AffineTransform().to_matrix(theta.double()))
    digit = box_corners(28, dtype=torch.float64) / 14  # normalised digit corners
    corners = (digit @ to_canvas[:, :2, :2].transpose(1, 2) + to_canvas[:, None, :2, 2]) * 21
    got_angle, got_log_scale, got_shift = similarity_fit(box_corners(28), corners)
    assert torch.allclose(got_angle.float(), angle, atol=1e-4)
    assert torch.allclose(got_log_scale.exp().float(), scale, atol=1e-6)
    assert torch.allclose(got_shift.float(), shift, atol=1e-4)


def test_circular_std_of_known_angle_sets() -> None:
    assert circular_std(torch.full((5,), 37.0)).item() == 0.0
    a = 20.0  # two angles ±a: R = cos a
    expected = math.degrees(math.sqrt(-2 * math.log(math.cos(math.radians(a)))))
    assert circular_std(torch.tensor([a, -a])).item() == pytest.approx(expected, rel=1e-6)
    # the ±180° wrap does not matter: 179° and -179° are 2° apart, like 1° and -1°
    wrapped = circular_std(torch.tensor([179.0, -179.0])).item()
    assert wrapped == pytest.approx(circular_std(torch.tensor([1.0, -1.0])).item(), rel=1e-4)
    # tight sets: close to the ordinary standard deviation
    tight = torch.randn(20_000, generator=torch.Generator().manual_seed(3)) * 2.0
    assert circular_std(tight).item() == pytest.approx(tight.std(unbiased=False).item(), rel=1e-3)
    # uniform on ±90°: R = 2/π
    uniform = torch.linspace(-90, 90, 100_001, dtype=torch.float64)
    assert circular_std(uniform).item() == pytest.approx(
        math.degrees(math.sqrt(-2 * math.log(2 / math.pi))), rel=1e-4
    )
    # evenly around the whole circle: no mean direction, unbounded
    assert circular_std(torch.tensor([0.0, 120.0, 240.0])).item() > 180


def test_pose_spread_ignores_a_uniform_zoom_but_not_a_shift() -> None:
    corners = _rotated(torch.tensor([-30.0, 0.0, 45.0])) + torch.tensor([[[1.0, 2.0]]])
    assert pose_spread(corners * 0.25).item() == pytest.approx(pose_spread(corners).item())
    square = box_corners(28, dtype=torch.float64)
    shifted = torch.stack((square + torch.tensor([5.0, 0.0]), square - torch.tensor([5.0, 0.0])))
    assert pose_spread(shifted).item() == pytest.approx(5 / (14 * math.sqrt(2)))


def test_identity_scores_0_a_canonicaliser_1_and_more_variation_below_0() -> None:
    gen = torch.Generator().manual_seed(4)
    angle = torch.rand(500, generator=gen, dtype=torch.float64) * 180 - 90
    before = _rotated(angle) * (0.7 + 0.5 * torch.rand(500, 1, 1, generator=gen))
    before = before + torch.randn(500, 1, 2, generator=gen) * 4
    src = box_corners(28)
    assert pose_statistics(src, before, before)["undone"] == 0.0
    one_pose = _rotated(torch.full((500,), 10.0)) * 1.3 + torch.tensor([2.0, -1.0])
    canonical = pose_statistics(src, before, one_pose)
    assert canonical["undone"] == pytest.approx(1.0, abs=1e-12)
    assert canonical["angle_std_after"] == pytest.approx(0.0, abs=1e-5)  # sqrt of round-off
    assert canonical["log_scale_std_after"] == pytest.approx(0.0, abs=1e-12)
    assert canonical["shift_std_after"] == pytest.approx(0.0, abs=1e-12)
    assert canonical["angle_std_before"] > 40
    turned_more = _rotated(2 * angle)
    assert pose_statistics(src, _rotated(angle), turned_more)["undone"] < 0


def test_undoing_half_of_each_rotation_scores_what_arithmetic_says() -> None:
    """Pure rotations: relative spread² = 1 − R² (R: mean resultant length of the angles)."""
    angle = torch.rand(2000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    angle = angle * 180 - 90
    stats = pose_statistics(box_corners(28), _rotated(angle), _rotated(angle / 2))

    def resultant(a: torch.Tensor) -> float:
        rad = torch.deg2rad(a)
        return float(torch.complex(rad.cos(), rad.sin()).mean().abs())

    expected = 1 - math.sqrt(1 - resultant(angle / 2) ** 2) / math.sqrt(1 - resultant(angle) ** 2)
    assert stats["undone"] == pytest.approx(expected, rel=1e-9)
    assert 0.4 < stats["undone"] < 0.47  # ≈ 0.436 for angles uniform on ±90°
    assert stats["angle_std_after"] == pytest.approx(circular_std(angle / 2).item(), rel=1e-9)
    assert stats["log_scale_std_before"] == pytest.approx(0.0, abs=1e-12)
    assert stats["shift_std_after"] == pytest.approx(0.0, abs=1e-9)


def test_a_set_without_pose_spread_has_no_undone() -> None:
    square = box_corners(28).expand(10, 4, 2)
    stats = pose_statistics(box_corners(28), square, square)
    assert math.isnan(stats["undone"]) and stats["angle_std_before"] == 0.0


def test_a_degenerate_warp_gives_nan_not_an_error() -> None:
    theta = torch.stack((AffineTransform().identity(), torch.zeros(6)))  # the 2nd: singular
    found = invert_points(AffineTransform(), theta, torch.zeros(2, 4, 2))
    assert torch.equal(found[0], torch.zeros(4, 2)) and found[1].isnan().all()
    tps = TPSTransform()
    flat = torch.zeros(1, tps.num_params)  # every control point reads the centre
    assert invert_points(tps, flat, torch.ones(1, 1, 2)).isnan().all()
