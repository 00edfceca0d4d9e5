"""Distortion throughput: stnlab's batched generator vs a per-sample torchvision pipeline.

For each variant, **stnlab** is the training path as it runs in ``Trainer.fit`` on the CPU
(index batches out of the in-memory uint8 digits, then the variant's distortion from its
data config on the whole batch); **peer** is what a user would write with
``torchvision.transforms.v2``: a ``Dataset`` that distorts one sample at a time and a
``DataLoader`` (the fastest ``num_workers`` of those tried). Each figure is the median of
several timed windows after warm-up, in samples per second.
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import open_dict
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, v2

from stnlab.bench.timing import endless, timed_windows
from stnlab.config import compose_config, data_variants
from stnlab.config_checks import check_finite, check_targets, instantiate_checked

# every distorted single-digit variant of conf/data/ (plain MNIST has no distortion to time)
VARIANTS = [v for v in data_variants(single_digit=True) if v != "mnist"]
BILINEAR = InterpolationMode.BILINEAR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--windows", type=int, default=5, help="timed windows per figure")
    parser.add_argument("--window-batches", type=int, default=8, help="batches per window")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="num_workers settings tried for the peer pipeline",
    )
    add_config_arguments(parser)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and repeatable ``--override KEY=VALUE``, shared by every benchmark."""
    parser.add_argument("--data-dir", default=os.environ.get("STNLAB_DATA_DIR", "data"))
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override applied to every run (repeatable), e.g. "
        "model.net.channels_last=false",
    )


def stnlab_datamodule(
    variant: str, data_dir: str, batch_size: int, overrides: list[str] | None = None
):
    """The variant's DataModule exactly as ``src/train.py data=<variant>`` builds it."""
    extra = [f"data={variant}", f"data.batch_size={batch_size}", *(overrides or [])]
    cfg = compose_config("train", extra)
    with open_dict(cfg):
        cfg.data.root = str(Path(data_dir).resolve())
    check_finite(cfg.data, "data")
    check_targets(cfg)
    dm = instantiate_checked(cfg.data, "data")
    dm.prepare_data()
    dm.setup("fit")
    return dm


class PerSampleDigits(Dataset):
    """A typical per-sample pipeline: one uint8 digit → ``transform`` → float image."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable, clutter: bool):
        self.images, self.labels = images, labels
        self.transform, self.clutter = transform, clutter

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.transform(self.images[index].unsqueeze(0))
        if self.clutter:  # six 6×6 patches of other random digits, pasted with max
            for _ in range(6):
                other = self.images[random.randrange(len(self.images))]
                y, x = random.randrange(23), random.randrange(23)
                py, px = random.randrange(55), random.randrange(55)
                patch = other[y : y + 6, x : x + 6].float() / 255
                region = image[0, py : py + 6, px : px + 6]
                image[0, py : py + 6, px : px + 6] = torch.maximum(region, patch)
        return image, int(self.labels[index])


def peer_transform(variant: str) -> tuple[Callable, bool]:
    """The same distortion family written with ``torchvision.transforms.v2``."""
    to_float = v2.ToDtype(torch.float32, scale=True)
    if variant == "rotated":
        return v2.Compose([to_float, v2.RandomRotation(90, interpolation=BILINEAR)]), False
    if variant == "rts":
        affine = v2.RandomAffine(45, translate=(0.1, 0.1), scale=(0.7, 1.2), interpolation=BILINEAR)
        return v2.Compose([to_float, v2.Pad(7), affine]), False
    if variant == "projective":
        return v2.Compose(
            [
                to_float,
                v2.RandomAffine(0, scale=(0.75, 1.0), interpolation=BILINEAR),
                v2.RandomPerspective(distortion_scale=0.35, p=1.0, interpolation=BILINEAR),
            ]
        ), False
    if variant == "elastic":
        return v2.Compose([to_float, v2.ElasticTransform(alpha=34.0, sigma=4.0)]), False
    translate = v2.RandomAffine(0, translate=(16 / 60, 16 / 60), interpolation=BILINEAR)
    return v2.Compose([to_float, v2.Pad(16), translate]), variant == "cluttered"


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    random.seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size}, median of {args.windows} windows × "
        f"{args.window_batches} batches"
    )
    header = f"{'variant':<11} {'stnlab/s':>10} {'(range)':>19} {'peer/s':>8} {'workers':>7} "
    print(header + f"{'ratio':>7}")
    results = {}
    for variant in args.variants:
        dm = stnlab_datamodule(variant, args.data_dir, args.batch_size, args.override)
        batches = endless(dm.train_dataloader())

        def stnlab_step(dm=dm, batches=batches) -> int:
            return len(dm.on_after_batch_transfer(next(batches), 0)[0])

        ours = timed_windows(
            stnlab_step, warmup=2, windows=args.windows, window_batches=args.window_batches
        )
        images, labels = dm.train_set.tensors
        transform, clutter = peer_transform(variant)
        peers = {}
        for workers in args.workers:
            loader_args = {
                "batch_size": args.batch_size,
                "shuffle": True,
                "num_workers": workers,
                "persistent_workers": workers > 0,
            }
            loader = DataLoader(PerSampleDigits(images, labels, transform, clutter), **loader_args)
            peer_batches = endless(loader)
            peers[workers] = timed_windows(
                lambda peer_batches=peer_batches: len(next(peer_batches)[0]),
                warmup=1,
                windows=max(3, args.windows // 2),
                window_batches=max(2, args.window_batches // 4),
            )
        best = max(peers, key=lambda w: peers[w].median)
        ratio = ours.median / peers[best].median
        rng = f"({ours.low:,.0f}–{ours.high:,.0f})"
        print(
            f"{variant:<11} {ours.median:>10,.0f} {rng:>19} {peers[best].median:>8,.0f} "
            f"{best:>7} {ratio:>6.1f}×"
        )
        results[variant] = {
            "stnlab_samples_per_s": round(ours.median, 1),
            "peer_samples_per_s": round(peers[best].median, 1),
            "ratio": round(ratio, 2),
        }
    return results
