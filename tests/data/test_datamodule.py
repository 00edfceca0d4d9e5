"""DigitsDataModule and distortions: fixed sets, fresh training draws, ranges, shapes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from stnlab.data.datamodule import DigitsDataModule, IndexBatches
from stnlab.data.distortions import NoDistortion, RandomProjective, RandomSimilarity


def _dm(root: Path, **kwargs: object) -> DigitsDataModule:
    base: dict[str, object] = {
        "root": str(root),
        "distortion": RandomSimilarity(canvas_size=28, max_angle=90.0),
        "val_size": 100,
        "batch_size": 32,
    }
    base.update(kwargs)
    dm = DigitsDataModule(**base)  # type: ignore[arg-type]
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    return dm


def _collect(loader: torch.utils.data.DataLoader, dm: DigitsDataModule) -> torch.Tensor:
    return torch.cat([dm.on_after_batch_transfer(b, 0)[0] for b in loader])


@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_fixed_sets_are_identical_whatever_the_batch_size(fake_mnist: Path, batch_size: int):
    reference = _dm(fake_mnist, eval_batch_size=1000)
    dm = _dm(fake_mnist, eval_batch_size=batch_size)
    for ref_loader, loader in [
        (reference.val_dataloader(), dm.val_dataloader()),
        (reference.test_dataloader(), dm.test_dataloader()),
    ]:
        a, b = _collect(ref_loader, reference), _collect(loader, dm)
        assert a.shape == b.shape
        assert torch.equal(a, b)
    assert len(_collect(dm.val_dataloader(), dm)) == 100
    assert len(_collect(dm.test_dataloader(), dm)) == 200


def test_fixed_sets_are_actually_distorted_and_in_range(fake_mnist: Path) -> None:
    plain = _dm(fake_mnist, distortion=NoDistortion(28))
    rotated = _dm(fake_mnist)
    a, b = plain.val_set.tensors[0], rotated.val_set.tensors[0]
    assert a.shape == b.shape == (100, 1, 28, 28)
    assert b.min() >= 0.0 and b.max() <= 1.0
    assert (a - b).abs().mean() > 0.01


def test_training_batches_are_fresh_each_epoch_and_seeded(fake_mnist: Path) -> None:
    dm = _dm(fake_mnist)
    loader = dm.train_dataloader()
    digits, labels, idx = next(iter(loader))
    assert digits.dtype == torch.uint8 and digits.shape == (32, 28, 28)
    x1, y1 = dm.on_after_batch_transfer((digits, labels, idx), 0)
    x2, _ = dm.on_after_batch_transfer((digits, labels, idx), 0)
    assert x1.shape == (32, 1, 28, 28) and x1.dtype == torch.float32
    assert torch.equal(y1, labels)
    assert not torch.equal(x1, x2)  # same digits, fresh angles
    # Same seed → same stream; other seed → other stream.
    again = _dm(fake_mnist)
    assert torch.equal(again.on_after_batch_transfer((digits, labels, idx), 0)[0], x1)
    other = _dm(fake_mnist, seed=99)
    assert not torch.equal(other.on_after_batch_transfer((digits, labels, idx), 0)[0], x1)


def test_generator_state_round_trips_for_resume(fake_mnist: Path) -> None:
    dm = _dm(fake_mnist)
    digits = dm.train_set.tensors[0][:8]
    dm.distort_train_batch(digits)
    state = dm.state_dict()
    expected = dm.distort_train_batch(digits)
    fresh = _dm(fake_mnist)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.distort_train_batch(digits), expected)


@pytest.mark.parametrize(
    ("step", "max_angle"), [(0, 0.0), (10, 18.0), (25, 45.0), (50, 90.0), (99, 90.0)]
)
def test_rotation_curriculum_ramps_the_training_angles(
    fake_mnist: Path, step: int, max_angle: float
) -> None:
    # over 50% of 100 steps the range grows 0 → ±90°: at step 10 it is ±18°, from 50 on full
    dm = _dm(fake_mnist, curriculum=0.5)
    dm.trainer = SimpleNamespace(
        global_step=step, estimated_stepping_batches=100, global_rank=0, world_size=1
    )
    same = _dm(fake_mnist, distortion=RandomSimilarity(canvas_size=28, max_angle=max_angle))
    digits = dm.train_set.tensors[0][:16]
    assert dm.rotation_strength() == pytest.approx(max_angle / 90.0)
    got, expected = dm.distort_train_batch(digits), same.distort_train_batch(digits)
    assert got.shape == (16, 1, 28, 28)
    assert torch.allclose(got, expected, atol=1e-5)
    # the fixed sets keep the full range whatever the step
    assert torch.equal(dm.val_set.tensors[0], _dm(fake_mnist).val_set.tensors[0])


def test_rotation_curriculum_refuses_what_it_cannot_ramp(fake_mnist: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.curriculum=1\.5"):
        DigitsDataModule(root=str(fake_mnist), distortion=RandomSimilarity(), curriculum=1.5)
    with pytest.raises(ValueError, match=r"data\.curriculum=0\.3 .*RandomProjective has none"):
        DigitsDataModule(root=str(fake_mnist), distortion=RandomProjective(), curriculum=0.3)


def test_index_batches_shuffle_per_epoch_and_shard_per_rank() -> None:
    sampler = IndexBatches(100, 10, shuffle=True, seed=3, drop_last=True)
    first = torch.cat(list(sampler))
    sampler.set_epoch(1)
    second = torch.cat(list(sampler))
    assert sorted(first.tolist()) == list(range(100)) == sorted(second.tolist())
    assert not torch.equal(first, second)
    ranks = [
        torch.cat(list(IndexBatches(100, 10, shuffle=True, seed=3, rank=r, world_size=2)))
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 50
    assert set(ranks[0].tolist()).isdisjoint(ranks[1].tolist())
    assert len(IndexBatches(105, 10, shuffle=False)) == 11


def test_rotation_angles_stay_in_range_and_keep_ink() -> None:
    dist = RandomSimilarity(canvas_size=28, max_angle=30.0)
    params = dist.sample(10_000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert params["angle"].abs().max() <= 30.0
    assert params["angle"].min() < -29.0 and params["angle"].max() > 29.0
    digits = torch.zeros(4, 1, 28, 28)
    digits[:, :, 10:18, 12:16] = 1.0
    out = dist(digits, torch.Generator().manual_seed(1))
    ink = out.sum(dim=(1, 2, 3)) / digits.sum(dim=(1, 2, 3))
    assert torch.all((ink - 1).abs() < 0.03)


def test_bad_settings_are_clear_errors(fake_mnist: Path) -> None:
    with pytest.raises(ValueError, match="canvas_size=42"):
        DigitsDataModule(root=str(fake_mnist), canvas_size=42, distortion=NoDistortion(28))
    with pytest.raises(ValueError, match=r"data\.source='emnist' is unknown"):
        DigitsDataModule(root=str(fake_mnist), source="emnist")
    # the key names of configs written before the rename still work
    old = DigitsDataModule(root=str(fake_mnist), name="rotated", dataset="mnist")
    assert (old.variant, old.source) == ("rotated", "mnist")
    with pytest.raises(ValueError, match="scale"):
        RandomSimilarity(scale=(1.2, 0.7))
    dm = DigitsDataModule(root=str(fake_mnist), val_size=10_000)
    with pytest.raises(ValueError, match="val_size=10000"):
        dm.setup("fit")


def test_rendering_the_fixed_sets_counts_every_image_on_rank_0_only(
    fake_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stnlab.data import datamodule

    opened = []
    real = datamodule.progress_bar

    @contextlib.contextmanager
    def recording(description: str, total: float | None, **kwargs: object) -> Iterator:
        with real(description, total, **kwargs) as bar:  # type: ignore[arg-type]
            opened.append((description, kwargs.get("enabled"), bar))
            yield bar

    monkeypatch.setattr(datamodule, "progress_bar", recording)
    dm = _dm(fake_mnist, variant="rotated")
    counts = [(d, enabled, bar.completed, bar.total) for d, enabled, bar in opened]
    n_val, n_test = len(dm.fixed_set("val")[1]), len(dm.fixed_set("test")[1])
    assert counts == [
        ("rendering the rotated validation set", True, n_val, n_val),
        ("rendering the rotated test set", True, n_test, n_test),
    ]
    monkeypatch.setattr(DigitsDataModule, "_rank_info", lambda self: (1, 2))
    opened.clear()
    _dm(fake_mnist)
    assert [enabled for _, enabled, _ in opened] == [False, False]
