"""The distorted-MNIST suite: ranges, fixed sets, ink, clutter, per-rank streams."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from stnlab.config import data_variants
from stnlab.data.datamodule import DigitsDataModule
from stnlab.data.distortions import (
    ClutteredPlacement,
    RandomElastic,
    RandomProjective,
    RandomSimilarity,
)
from stnlab.geometry import smooth_displacement
from stnlab.tasks import train

# The classification variants (single digits and addition); co-localisation's data (boxes,
# one class, its own sizes) is tested in tests/test_colocalisation.py.
VARIANTS = [*data_variants(single_digit=True), "addition"]
CPU = torch.device("cpu")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blob_digits(n: int) -> torch.Tensor:
    """``(n, 1, 28, 28)`` digits with all ink well inside the 28×28 box."""
    digits = torch.zeros(n, 1, 28, 28)
    digits[:, :, 8:20, 11:17] = 1.0
    digits[:, :, 8:11, 9:19] = 1.0
    return digits


def test_rts_parameters_stay_in_range_and_the_digit_box_inside_the_canvas() -> None:
    dist = RandomSimilarity(canvas_size=42, max_angle=45, scale=(0.7, 1.2), max_shift=None)
    p = dist.sample(20_000, _gen(), CPU)
    assert p["angle"].abs().max() <= 45 and p["angle"].abs().max() > 44
    assert p["scale"].min() >= 0.7 and p["scale"].max() <= 1.2
    half_box = 28 * p["scale"] / 2
    assert torch.all(p["shift"].abs() + half_box.unsqueeze(1) <= 21 + 1e-4)
    # positions use the room they have: some digits go near the border
    assert (p["shift"].abs() + half_box.unsqueeze(1)).max() > 20.5
    with pytest.raises(ValueError, match="canvas_size=30 is smaller"):
        RandomSimilarity(canvas_size=30, scale=(0.7, 1.2), max_shift=None)


def test_translated_digit_keeps_its_ink_and_lands_inside() -> None:
    dist = RandomSimilarity(canvas_size=60, max_angle=0, max_shift=None)
    digits = _blob_digits(64)
    p = dist.sample(64, _gen(1), CPU)
    out = dist.render(digits, p)
    assert out.shape == (64, 1, 60, 60)
    ink = out.sum(dim=(1, 2, 3)) / digits.sum(dim=(1, 2, 3))
    assert torch.all((ink - 1).abs() < 0.02)
    assert p["shift"].abs().max() <= 16


def test_rotation_keeps_ink() -> None:
    dist = RandomSimilarity(canvas_size=28, max_angle=90)
    digits = _blob_digits(64)
    out = dist(digits, _gen(2))
    ink = out.sum(dim=(1, 2, 3)) / digits.sum(dim=(1, 2, 3))
    assert torch.all((ink - 1).abs() < 0.03)


def test_projective_identity_and_corner_noise() -> None:
    digits = _blob_digits(4)
    dist = RandomProjective(canvas_size=28, scale=(1.0, 1.0), corner_std=0.0)
    out = dist.render(digits, dist.sample(4, _gen(), CPU))
    assert (out - digits).abs().max() < 1e-4
    noisy = RandomProjective(canvas_size=28)
    p = noisy.sample(10_000, _gen(3), CPU)
    assert p["corners"].shape == (10_000, 4, 2)
    assert abs(p["corners"].std().item() - 5.0) < 0.1
    assert p["scale"].min() >= 0.75 and p["scale"].max() <= 1.0
    assert not torch.allclose(noisy.render(digits, noisy.sample(4, _gen(), CPU)), digits)


def test_elastic_is_smooth_and_moderate() -> None:
    digits = _blob_digits(8)
    assert (RandomElastic(alpha=0.0)(digits, _gen()) - digits).abs().max() < 1e-5
    dist = RandomElastic()
    field = smooth_displacement(dist.sample(256, _gen(4), CPU)["noise"], dist.sigma, dist.alpha)
    magnitude = field.norm(dim=1)  # (B, H, W) pixels
    assert 0.5 < magnitude.mean() < 4.0 and magnitude.max() < 10.0
    # smooth: neighbouring pixels move alike (a fraction of a pixel apart)
    step = (field[..., 1:] - field[..., :-1]).abs().mean()
    assert step < 0.3 * field.abs().mean()
    assert (dist(digits, _gen(5)) - digits).abs().mean() > 0.005


def test_clutter_adds_ink_only_where_patches_land() -> None:
    dist = ClutteredPlacement(canvas_size=60, num_patches=6, patch_size=6)
    digits = torch.rand(32, 1, 28, 28)
    p = dist.sample(32, _gen(5), CPU)
    assert p["source"].shape == (32, 6)
    assert torch.all(p["source"] != torch.arange(32).unsqueeze(1))  # other digits
    assert p["paste"].min() >= 0 and p["paste"].max() <= 54
    plain = RandomSimilarity(60, max_angle=0, max_shift=None).render(digits, p)
    out = dist.render(digits, p)
    assert torch.all(out >= plain - 1e-6)
    mask = torch.zeros(32, 1, 60, 60, dtype=torch.bool)
    for i in range(32):
        for x, y in p["paste"][i].tolist():
            mask[i, :, y : y + 6, x : x + 6] = True
    assert torch.all((out - plain)[~mask].abs() < 1e-6)
    # and the patches carry real content of their source digits
    i, (cx, cy), (px, py) = 0, p["crop"][0, 0].tolist(), p["paste"][0, 0].tolist()
    src = digits[p["source"][0, 0], 0, cy : cy + 6, cx : cx + 6]
    assert torch.all(out[i, 0, py : py + 6, px : px + 6] >= src - 1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fixed_sets_identical_across_batch_sizes(
    make_cfg: Callable[..., DictConfig], variant: str
) -> None:
    sets = []
    for batch_size in (1, 7, 256):
        cfg = make_cfg(f"data={variant}", f"data.eval_batch_size={batch_size}")
        dm: DigitsDataModule = instantiate(cfg.data)
        dm.setup("test")
        batches = [dm.on_after_batch_transfer(b, 0)[0] for b in dm.test_dataloader()]
        sets.append(torch.cat(batches))
    side = sets[0].shape[-1]
    assert sets[0].shape == (200, cfg.data.channels, side, side)
    assert all(torch.equal(sets[0], other) for other in sets[1:])


def _val_digest(root: Path, variant_kwargs: dict) -> str:
    dm = DigitsDataModule(root=str(root), val_size=100, **variant_kwargs)
    dm.setup("fit")
    return hashlib.sha256(dm.val_set.tensors[0].numpy().tobytes()).hexdigest()


def test_fixed_sets_identical_across_processes(fake_mnist: Path) -> None:
    # The child process cannot see the monkeypatched checksums: it reads the fixed set
    # through the same code with verification of the synthetic files swapped in.
    code = (
        "import sys, dataclasses, hashlib, torch\n"
        "from stnlab.data import sources\n"
        "from stnlab.data.datamodule import DigitsDataModule\n"
        "from stnlab.data.distortions import ClutteredPlacement\n"
        "root = sys.argv[1]\n"
        "spec = sources.SPECS['mnist']\n"
        "files = {k: dataclasses.replace(f, md5=hashlib.md5(open(f'{root}/MNIST/raw/{f.name}',"
        " 'rb').read()).hexdigest()) for k, f in spec.files.items()}\n"
        "sources.SPECS['mnist'] = dataclasses.replace(spec, files=files)\n"
        "dm = DigitsDataModule(root=root, val_size=100, canvas_size=60,"
        " distortion=ClutteredPlacement())\n"
        "dm.setup('fit')\n"
        "print(hashlib.sha256(dm.val_set.tensors[0].numpy().tobytes()).hexdigest())\n"
    )
    # One fresh process against this one (which has run other tests before): two
    # processes, two histories, the same bytes.
    there = subprocess.run(
        [sys.executable, "-c", code, str(fake_mnist)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    here = _val_digest(fake_mnist, {"canvas_size": 60, "distortion": ClutteredPlacement()})
    assert len(there) == 64 and there == here


def test_two_ranks_draw_different_training_streams(fake_mnist: Path) -> None:
    draws = []
    for rank in (0, 1):
        dm = DigitsDataModule(
            root=str(fake_mnist), val_size=100, distortion=RandomSimilarity(28, max_angle=90)
        )
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)  # type: ignore[assignment]
        dm.setup("fit")
        digits = dm.train_set.tensors[0][:16]
        draws.append(dm.distort_train_batch(digits))
    assert not torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_dev_run_for_every_variant(make_cfg: Callable[..., DictConfig], variant: str):
    metrics = train(make_cfg("model=stn_cnn", f"data={variant}", "debug=fdr"))
    assert 0.0 <= metrics["test/acc"] <= 1.0
