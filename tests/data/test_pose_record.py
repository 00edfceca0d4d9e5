"""Each distortion's pose record: where the digit's box went, as the renderer put it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stnlab.data.datamodule import DigitsDataModule
from stnlab.data.distortions import (
    ClutteredPlacement,
    Distortion,
    NoDistortion,
    PoseRecord,
    RandomElastic,
    RandomProjective,
    RandomSimilarity,
)
from stnlab.geometry import apply_homography, box_corners

WITH_HOMOGRAPHY = {
    "none": NoDistortion(28),
    "rotated": RandomSimilarity(28, max_angle=90.0),
    "rts": RandomSimilarity(42, max_angle=45.0, scale=(0.7, 1.2), max_shift=None),
    "projective": RandomProjective(28),
    "translated": RandomSimilarity(60, max_angle=0.0, max_shift=None),
    "cluttered": ClutteredPlacement(60, num_patches=0),
}


@pytest.mark.parametrize("name", sorted(WITH_HOMOGRAPHY))
def test_the_homography_puts_a_digit_pixel_where_the_renderer_does(name: str) -> None:
    distortion: Distortion = WITH_HOMOGRAPHY[name]
    n = 16
    params = distortion.sample(n, torch.Generator().manual_seed(0), torch.device("cpu"))
    record = distortion.pose_record(params, n)
    assert record.corners.shape == (n, 4, 2) and record.homography.shape == (n, 3, 3)
    assert record.digit_size == 28
    box = box_corners(28, centred=False).expand(n, 4, 2)
    assert torch.allclose(apply_homography(record.homography, box), record.corners, atol=1e-4)
    digits = torch.zeros(n, 1, 28, 28)
    digits[:, :, 5, 19] = 1.0  # one lit pixel, centre (19.5, 5.5) in digit pixels
    canvas = distortion.render(digits, params)
    side = canvas.shape[-1]
    # the centre of mass of the rendered dot is where the homography sends the pixel centre
    weights = canvas[:, 0].flatten(1)
    ys, xs = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    mass = torch.stack(
        ((weights * xs.flatten()).sum(1), (weights * ys.flatten()).sum(1)), dim=1
    ) / weights.sum(1, keepdim=True)
    expected = apply_homography(record.homography, torch.tensor([[[19.5, 5.5]]]).expand(n, 1, 2))
    assert (mass - expected[:, 0]).abs().max() < 0.35


def test_rotation_record_matches_the_closed_form() -> None:
    distortion = WITH_HOMOGRAPHY["rts"]
    params = distortion.sample(8, torch.Generator().manual_seed(1), torch.device("cpu"))
    corners = distortion.pose_record(params, 8).corners
    rad = torch.deg2rad(params["angle"])
    cos, sin = torch.cos(rad), torch.sin(rad)
    # p = s R q + t (pixels from the centres, y down), R turning counter-clockwise on screen
    rot = torch.stack((torch.stack((cos, sin), -1), torch.stack((-sin, cos), -1)), -2)
    expected = params["scale"].view(-1, 1, 1) * (box_corners(28) @ rot.transpose(1, 2))
    expected = expected + params["shift"].unsqueeze(1) + 21
    assert torch.allclose(corners, expected, atol=1e-4)


def test_elastic_record_is_the_preimage_of_the_corners_under_the_field() -> None:
    still = RandomElastic(28, alpha=0.0)
    record = still.pose_record(still.sample(3, torch.Generator(), torch.device("cpu")), 3)
    assert record.homography is None
    assert torch.equal(record.corners, box_corners(28, centred=False).expand(3, 4, 2))
    elastic = RandomElastic(28)
    params = elastic.sample(6, torch.Generator().manual_seed(2), torch.device("cpu"))
    corners = elastic.pose_record(params, 6).corners
    from stnlab.geometry import smooth_displacement

    field = smooth_displacement(params["noise"], elastic.sigma, elastic.alpha)
    grid = (corners * (2 / 28) - 1).unsqueeze(1)
    d = F.grid_sample(field, grid, padding_mode="border", align_corners=False)[:, :, 0]
    landed = corners + d.transpose(1, 2)  # the output point reads the input here
    assert (landed - box_corners(28, centred=False)).abs().max() < 1e-4
    assert (corners - box_corners(28, centred=False)).abs().max() > 0.1  # it did move


def test_records_slice_and_concatenate() -> None:
    distortion = WITH_HOMOGRAPHY["rotated"]
    params = distortion.sample(10, torch.Generator().manual_seed(3), torch.device("cpu"))
    record = distortion.pose_record(params, 10)
    joined = PoseRecord.cat([record[:4], record[4:]])
    assert torch.equal(joined.corners, record.corners)
    assert torch.equal(joined.homography, record.homography)
    assert len(record[torch.tensor([1, 3])]) == 2


def test_datamodule_keeps_a_pose_record_per_fixed_digit(fake_mnist: Path) -> None:
    def build() -> DigitsDataModule:
        dm = DigitsDataModule(
            root=str(fake_mnist),
            distortion=RandomSimilarity(42, max_angle=45.0, scale=(0.7, 1.2), max_shift=None),
            canvas_size=42,
            val_size=100,
        )
        dm.setup("fit")
        return dm

    dm = build()
    images, labels, pose = dm.fixed_set("val")
    assert images.shape == (100, 1, 42, 42) and len(labels) == 100 and len(pose) == 100
    params = dm.distortion.sample(100, torch.Generator().manual_seed(dm.eval_seed), "cpu")
    assert torch.equal(pose.corners, dm.distortion.pose_record(params, 100).corners)
    assert torch.equal(build().val_pose.corners, pose.corners)  # fixed, like the images
    _, _, test_pose = dm.fixed_set("test")  # sets the test split up on demand
    assert len(test_pose) == 200 and not torch.equal(test_pose.corners[:100], pose.corners)
    batch = next(iter(dm.val_dataloader()))
    assert len(batch) == 3  # (images, labels, index): the loaders are unchanged
