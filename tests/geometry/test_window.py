"""What the output window holds, on hand-made cases where arithmetic gives the answer."""

from __future__ import annotations

import pytest
import torch

from stnlab.geometry import (
    AffineTransform,
    AttentionTransform,
    ProjectiveTransform,
    SimilarityTransform,
    TPSTransform,
    TranslationTransform,
    box_coverage,
    ink_kept,
    inside_quad,
    sample,
    window_mask,
)
from stnlab.models import SpatialTransformer
from stnlab.models.loc_nets import FCLocNet


def box(x0: float, y0: float, x1: float, y1: float, canvas: int) -> torch.Tensor:
    """Corners ``(1, 4, 2)`` of a pixel box in normalised coordinates of ``canvas``."""
    px = torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=torch.float64)
    return (px * (2.0 / canvas) - 1.0)[None]


def crop_theta(x0: float, y0: float, side: float, canvas: int) -> torch.Tensor:
    """Attention θ ``(1, 3)`` that reads exactly the square pixel box at ``(x0, y0)``."""
    scale = side / canvas
    centre = torch.tensor([x0 + side / 2, y0 + side / 2]) * (2.0 / canvas) - 1.0
    return torch.tensor([[scale, float(centre[0]), float(centre[1])]])


def test_a_known_zoom_gives_the_known_coverage() -> None:
    # a 30-pixel window on a 60-pixel canvas around a centred 28-pixel box: 28 of the 30
    # output pixel centres fall inside the box on each axis
    theta = torch.tensor([[0.5, 0.0, 0.0]])
    got = box_coverage(AttentionTransform(), theta, box(16, 16, 44, 44, 60), output_size=30)
    assert got.item() == pytest.approx((28 / 30) ** 2, abs=1e-9)
    # the identity: the box's share of the canvas, (28/60)²
    identity = torch.tensor([[1.0, 0.0, 0.0]])
    got = box_coverage(AttentionTransform(), identity, box(16, 16, 44, 44, 60), output_size=60)
    assert got.item() == pytest.approx((28 / 60) ** 2, abs=1e-9)
    # a window inside the box: the box fills all of it
    inner = crop_theta(20, 20, 20, 60)
    got = box_coverage(AttentionTransform(), inner, box(16, 16, 44, 44, 60), output_size=24)
    assert got.item() == 1.0


def test_the_identity_keeps_all_ink_and_an_exact_crop_keeps_none_of_the_clutter() -> None:
    canvas = 60
    digit = torch.zeros(1, 1, canvas, canvas)
    digit[..., 34:54, 36:52] = torch.rand(1, 1, 20, 16) + 0.1  # ink inside the box (30..58)
    clutter = torch.zeros(1, 1, canvas, canvas)
    clutter[..., 2:8, 3:9] = 1.0  # two patches, both outside the box
    clutter[..., 40:46, 10:16] = 0.5
    identity = window_mask(AttentionTransform(), torch.tensor([[1.0, 0.0, 0.0]]), (60, 60))
    assert identity.all()
    assert ink_kept(clutter, identity).item() == pytest.approx(1.0)
    assert ink_kept(digit, identity).item() == pytest.approx(1.0)
    crop = window_mask(AttentionTransform(), crop_theta(30, 30, 28, canvas), (60, 60))
    assert int(crop.sum()) == 28 * 28  # exactly the box's pixels
    assert ink_kept(clutter, crop).item() == 0.0
    assert ink_kept(digit, crop).item() == pytest.approx(1.0)
    # half of one patch inside the window: its share of the clutter's ink
    clutter[..., 30:36, 27:33] = 1.0  # columns 30..32 inside, 27..29 outside
    total = 36 + 36 * 0.5 + 36
    assert ink_kept(clutter, crop).item() == pytest.approx(18 / total)


def test_no_ink_is_nan_and_a_degenerate_warp_reads_nothing() -> None:
    assert torch.isnan(ink_kept(torch.zeros(1, 1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool)))
    flat = torch.zeros(1, 6)  # every output point reads the input's centre
    assert not window_mask(AffineTransform(), flat, (8, 8)).any()


@pytest.mark.parametrize(
    "family",
    [AffineTransform(), ProjectiveTransform(), SimilarityTransform(), TPSTransform()],
    ids=lambda f: f.name,
)
def test_every_family_reads_the_window_it_samples(family: torch.nn.Module) -> None:
    """The mask marks the input pixels the sampler reads: an image that is 1 inside the
    mask and 0 outside comes out of the warp (nearly) all ones."""
    theta = family.window(0.5)[None]
    mask = window_mask(family, theta, (40, 40))
    assert 0.2 < mask.float().mean() < 0.3  # a window of half the side: a quarter
    warped = sample(mask[:, None].float(), family.grid(theta, (16, 16)))
    assert warped.mean().item() > 0.95


def test_inside_quad_handles_a_turned_quad_either_way_round() -> None:
    diamond = torch.tensor([[[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    points = torch.tensor([[[0.0, 0.0], [0.6, 0.6], [0.4, 0.4]]])
    expected = [[True, False, True]]
    assert inside_quad(points, diamond).tolist() == expected
    assert inside_quad(points, diamond.flip(1)).tolist() == expected


@pytest.mark.parametrize("scale", [0.4, 0.8])
def test_a_transformer_starts_at_the_centred_window(scale: float) -> None:
    family = AttentionTransform(scale_range=(0.2, 1.5))
    transformer = SpatialTransformer(FCLocNet(1, 20, hidden=[8]), family, 8, init_scale=scale)
    canvas = torch.rand(2, 1, 20, 20)
    _, theta = transformer.warp_params(canvas)
    matrix = family.matrix(theta)
    assert torch.allclose(matrix[:, 0, 0], torch.full((2,), scale))
    assert torch.allclose(matrix[:, :, 2], torch.zeros(2, 2), atol=1e-6)
    inside = window_mask(family, theta, (20, 20))
    assert int(inside[0].sum()) == round(20 * scale) ** 2


def test_init_scale_errors_name_the_value_and_what_is_valid() -> None:
    loc = FCLocNet(1, 20, hidden=[8])
    with pytest.raises(ValueError, match=r"init_scale=0.5 needs attention, similarity"):
        SpatialTransformer(loc, TranslationTransform(), init_scale=0.5)
    with pytest.raises(ValueError, match=r"init_scale=1.5 must be a finite number in \(0, 1\]"):
        SpatialTransformer(loc, AffineTransform(), init_scale=1.5)
    with pytest.raises(ValueError, match=r"init_scale=0.1 is outside the family's scale_range"):
        SpatialTransformer(loc, AttentionTransform(scale_range=(0.2, 1.5)), init_scale=0.1)


def test_a_scale_range_below_1_zooms_in_only_and_has_no_identity() -> None:
    family = AttentionTransform(scale_range=(0.25, 0.45))
    raw = torch.tensor([[-50.0, 0, 0], [50.0, 0, 0], [1.0, 0, 0]])
    scales = family.matrix(raw)[:, 0, 0]
    assert scales.tolist() == pytest.approx([0.25, 0.45, 0.35])  # raw 1: the middle
    assert family.matrix(family.window(0.4)[None])[0, 0, 0].item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"scale_range \(0.25, 0.45\) has no identity"):
        family.identity()
    loc = FCLocNet(1, 20, hidden=[8])
    with pytest.raises(ValueError, match=r"init_scale=1.0 is outside the family's scale_range"):
        SpatialTransformer(loc, family)


def test_ic_stn_refuses_a_zoomed_start() -> None:
    from stnlab.models import ICSpatialTransformer

    loc = FCLocNet(1, 20, hidden=[8])
    with pytest.raises(ValueError, match=r"init_scale=0.5 would zoom at every step; use 1.0"):
        ICSpatialTransformer(loc, AffineTransform(), init_scale=0.5)
