"""Affine family, placement θ and the sampler: identity, analytic warps, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stnlab.geometry import (
    ALIGN_CORNERS,
    AffineTransform,
    base_grid,
    make_family,
    placement_theta,
    sample,
    warp,
)


def test_identity_theta_reproduces_input() -> None:
    family = AffineTransform()
    images = torch.rand(3, 2, 17, 23)
    theta = family.identity().expand(3, -1)
    out = warp(images, family, theta)
    assert out.shape == images.shape
    assert (out - images).abs().max() < 1e-5


def test_base_grid_is_affine_grid_identity() -> None:
    eye = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]])
    ref = F.affine_grid(eye, [1, 1, 5, 7], align_corners=ALIGN_CORNERS)[0]
    assert torch.allclose(base_grid(5, 7), ref, atol=1e-6)


def _dot_image(size: int, row: int, col: int) -> torch.Tensor:
    image = torch.zeros(1, 1, size, size)
    image[0, 0, row, col] = 1.0
    return image


def test_rotation_by_90_degrees_lands_where_the_formula_says() -> None:
    # A pixel at (row 3, col 20) of a 28×28 image is at (x, y) = (6.5, -10.5) px from the
    # centre (13.5, 13.5). Rotating 90° counter-clockwise on screen (y down) sends
    # (x, y) → (y, -x) = (-10.5, -6.5), i.e. pixel (row 7, col 3).
    image = _dot_image(28, 3, 20)
    theta = placement_theta(torch.tensor([90.0]), torch.ones(1), torch.zeros(1, 2), 28, 28)
    out = warp(image, AffineTransform(), theta)
    assert out[0, 0, 7, 3] > 0.999
    assert abs(out.sum().item() - 1.0) < 1e-4


def test_translation_and_canvas_placement() -> None:
    # On a 42×42 canvas a 28×28 image centred and shifted (5 right, -3 down) puts its pixel
    # (r, c) at (r + 7 - 3, c + 7 + 5).
    image = _dot_image(28, 10, 12)
    theta = placement_theta(torch.zeros(1), torch.ones(1), torch.tensor([[5.0, -3.0]]), 28, 42)
    out = warp(image, AffineTransform(), theta, (42, 42))
    assert out.shape == (1, 1, 42, 42)
    assert out[0, 0, 14, 24] > 0.999


def test_scale_about_the_centre() -> None:
    # Scale 2 about the centre: a 2×2 block at rows/cols 14..15 of 28×28 (offset +0.5..+1.5 px
    # from the centre 14.0 in pixel-edge terms) becomes a 4×4 block at rows/cols 14..17.
    image = torch.zeros(1, 1, 28, 28)
    image[..., 14:16, 14:16] = 1.0
    theta = placement_theta(torch.zeros(1), torch.full((1,), 2.0), torch.zeros(1, 2), 28, 28)
    out = warp(image, AffineTransform(), theta)
    assert torch.allclose(out[0, 0, 15:17, 15:17], torch.ones(2, 2), atol=1e-5)
    assert abs(out.sum().item() - 4 * image.sum().item()) < 1.0


def test_family_registry_rejects_unknown_names() -> None:
    assert isinstance(make_family("affine"), AffineTransform)
    with pytest.raises(ValueError, match=r"'affinne'; valid: \[.*'affine'"):
        make_family("affinne")


def test_wrong_theta_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\(B, 6\), got \(2, 4\)"):
        AffineTransform().grid(torch.zeros(2, 4), (8, 8))


def test_gradcheck_through_grid_and_sampler() -> None:
    family = AffineTransform()
    images = torch.rand(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    theta = family.identity().double() + 0.1 * torch.randn(2, 6, dtype=torch.float64)
    theta.requires_grad_(True)

    def fn(img: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        return sample(img, family.grid(th, (5, 5)))

    assert torch.autograd.gradcheck(fn, (images, theta), eps=1e-6, atol=1e-4)
