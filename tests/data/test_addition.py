"""MNIST addition data: two digits as two channels, label = their sum, fixed sets and fresh
training pairs, both digits' poses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from stnlab.data.addition import AdditionDataModule
from stnlab.data.distortions import RandomSimilarity
from stnlab.data.sources import load_split
from stnlab.errors import ConfigError
from stnlab.geometry import apply_homography


def _plain(root: Path, **kwargs: object) -> AdditionDataModule:
    """Addition without distortion: each channel is a source digit exactly."""
    options: dict[str, object] = {
        "root": str(root),
        "val_size": 100,
        "batch_size": 32,
        "mean": [0.1, 0.1],
        "std": [0.3, 0.3],
    }
    options.update(kwargs)
    dm = AdditionDataModule(**options)  # type: ignore[arg-type]
    dm.setup("fit")
    dm.setup("test")
    return dm


def _find(images: Tensor, pool: Tensor) -> Tensor:
    """Index in ``pool`` ``(M, 28, 28)`` of each of ``images`` ``(N, 28, 28)`` (exact match)."""
    distance = torch.cdist(images.flatten(1).double(), pool.flatten(1).double())
    assert torch.all(distance.min(dim=1).values == 0)
    return distance.argmin(dim=1)


def test_fixed_set_pairs_two_different_digits_and_labels_their_sum(fake_mnist: Path) -> None:
    dm = _plain(fake_mnist)
    digits, digit_labels = load_split(str(fake_mnist), "mnist", "test", allow_fetch=False)
    images, labels, _ = dm.fixed_set("test")
    assert images.shape == (200, 2, 28, 28) and images.dtype == torch.float32
    first = _find(images[:, 0] * 255, digits.float())
    second = _find(images[:, 1] * 255, digits.float())
    assert torch.equal(first, torch.arange(200))  # channel 0: the digit of that index
    assert torch.all(second != first)  # channel 1: another digit
    assert torch.equal(labels, digit_labels[first] + digit_labels[second])
    assert labels.max() <= 18 and labels.min() >= 0
    assert dm.num_classes == 19 and dm.channels == 2


def test_training_pairs_are_fresh_seeded_and_never_a_digit_with_itself(fake_mnist: Path) -> None:
    dm = _plain(fake_mnist)
    digits, labels, _ = dm.train_set[torch.arange(32)]
    images, sums = dm.pair_train_batch(digits, labels)
    assert images.shape == (32, 2, 28, 28)
    partner = _find(images[:, 1] * 255, digits.float())
    assert torch.equal(_find(images[:, 0] * 255, digits.float()), torch.arange(32))
    assert torch.all(partner != torch.arange(32))
    assert sorted(partner.tolist()) == list(range(32))  # every digit is someone's partner once
    assert torch.equal(sums, labels + labels[partner])
    again, _ = dm.pair_train_batch(digits, labels)
    assert not torch.equal(again, images)  # the next batch draws new pairs
    replay = _plain(fake_mnist)  # the same seed replays the same pairs
    assert torch.equal(replay.pair_train_batch(digits, labels)[0], images)
    # the loader's path: raw uint8 digits in, paired canvases and sums out
    batch = next(iter(dm.train_dataloader()))
    x, y = dm.on_after_batch_transfer(batch, 0)
    assert x.shape == (32, 2, 28, 28) and y.shape == (32,) and int(y.max()) <= 18


def test_rts_pairs_keep_both_digits_inside_the_canvas_with_their_poses(
    make_cfg: Callable[..., DictConfig],
) -> None:
    dm: AdditionDataModule = instantiate(make_cfg("data=addition").data)
    dm.setup("test")
    images, _, first_pose = dm.fixed_set("test")
    poses = dm.fixed_poses("test")
    assert images.shape == (200, 2, 42, 42)
    assert poses is not None and len(poses) == 2 and poses[0] is first_pose
    assert not torch.equal(poses[0].corners, poses[1].corners)  # posed independently
    for channel, pose in enumerate(poses):
        # MNIST's ink lies in the central 20×20 of the 28×28 digit: it lands on the canvas
        ink_box = torch.tensor([[4.0, 4.0], [24.0, 4.0], [24.0, 24.0], [4.0, 24.0]])
        corners = apply_homography(pose.homography, ink_box.expand(200, 4, 2))
        assert corners.min() >= -0.5 and corners.max() <= 42.5, channel
        # and the canvas shows the digit where the record says: ink centred on the box
        assert pose.homography is not None
        ink = images[:, channel]
        ys, xs = torch.meshgrid(torch.arange(42.0) + 0.5, torch.arange(42.0) + 0.5, indexing="ij")
        mass = ink.sum(dim=(1, 2))
        centre = torch.stack(((ink * xs).sum((1, 2)) / mass, (ink * ys).sum((1, 2)) / mass), 1)
        box_centre = pose.corners.mean(dim=1)
        assert (centre - box_centre).norm(dim=1).median() < 4.0


def test_fixed_sets_are_the_same_whatever_the_batch_size(
    make_cfg: Callable[..., DictConfig],
) -> None:
    sets = []
    for batch_size in (1, 13, 256):
        dm = instantiate(make_cfg("data=addition", f"data.eval_batch_size={batch_size}").data)
        dm.setup("test")
        sets.append(torch.cat([dm.on_after_batch_transfer(b, 0)[1] for b in dm.test_dataloader()]))
        sets.append(torch.cat([dm.on_after_batch_transfer(b, 0)[0] for b in dm.test_dataloader()]))
    assert all(torch.equal(sets[0], other) for other in sets[2::2])  # labels
    assert all(torch.equal(sets[1], other) for other in sets[3::2])  # images


def test_bad_settings_say_what_is_valid(fake_mnist: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.source must be mnist, got 'fashion_mnist'"):
        AdditionDataModule(root=str(fake_mnist), source="fashion_mnist")
    with pytest.raises(ConfigError, match=r"2 channels .* 19 classes .*data.num_classes=10"):
        AdditionDataModule(root=str(fake_mnist), num_classes=10)
    distortion = RandomSimilarity(30, max_angle=0.0)
    with pytest.raises(ConfigError, match="canvas_size=42 but the distortion renders 30"):
        AdditionDataModule(root=str(fake_mnist), canvas_size=42, distortion=distortion)
