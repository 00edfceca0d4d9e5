"""MNIST addition (the appendix of Jaderberg et al., 2015): two digits, each distorted on
its own, stacked as the two channels of one canvas; the label is their sum (19 classes).

Training pairs are drawn afresh for every batch, on the batch's device: the batch is
shuffled by the seeded training generator and each digit is paired with the next one in
that order, so no digit meets itself and every pair is new. The fixed validation and test
sets pair every index with a partner drawn once from ``eval_seed`` (never itself), then
render both digits with their own parameters, so the sets are the same whatever the batch
size, device or process count. Each digit's pose is kept
(:meth:`AdditionDataModule.fixed_poses`): digit ``j`` is channel ``j``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from stnlab.data.datamodule import DigitsDataModule, TensorBatches, to_float
from stnlab.errors import ConfigError
from stnlab.geometry import PoseRecord

DIGITS = 2
"""Digits per image: the paper's two."""


class AdditionDataModule(DigitsDataModule):
    """Pairs of distorted MNIST digits as two-channel canvases ``(B, 2, S, S)``, labelled
    with the sum of the two digits (``0 … 18``).

    Takes :class:`~stnlab.data.datamodule.DigitsDataModule`'s arguments; ``channels`` is
    the canvas's (2: one per digit), ``num_classes`` 19, and ``mean``/``std`` one entry per
    channel. Every digit is drawn from the same split (train, validation or test), so no
    test digit is seen in training.
    """

    def __init__(self, channels: int = DIGITS, num_classes: int = 19, **kwargs: Any) -> None:
        super().__init__(channels=channels, num_classes=num_classes, **kwargs)
        if self.source != "mnist":
            raise ConfigError(
                f"data=addition sums digit labels: data.source must be mnist, got {self.source!r}"
            )
        if channels != DIGITS or num_classes != 9 * DIGITS + 1:
            raise ConfigError(
                f"data=addition has {DIGITS} channels (one per digit) and {9 * DIGITS + 1} "
                f"classes (sums 0–{9 * DIGITS}); got data.channels={channels}, "
                f"data.num_classes={num_classes}"
            )
        self.val_poses: tuple[PoseRecord, ...] | None = None
        self.test_poses: tuple[PoseRecord, ...] | None = None

    @property
    def source_channels(self) -> int:
        """Channels of one source image (MNIST's one)."""
        return self.channels // DIGITS

    def _render_fixed(
        self, images: Tensor, labels: Tensor, seed: int, split: str
    ) -> tuple[TensorBatches, PoseRecord | None]:
        """Pair every index with a partner drawn from ``seed`` and render both digits;
        keeps both pose records (``<split>_poses``) and returns the first digit's."""
        gen = torch.Generator().manual_seed(seed)
        n = len(images)
        partner = (torch.arange(n) + torch.randint(1, n, (n,), generator=gen)) % n
        first, first_pose = self._render_digits(images, images, gen, f"{split} (digit 1)")
        second, second_pose = self._render_digits(
            images[partner], images, gen, f"{split} (digit 2)"
        )
        poses = None if first_pose is None or second_pose is None else (first_pose, second_pose)
        name = "val" if split == "validation" else split
        setattr(self, f"{name}_poses", poses)
        canvases = torch.cat((first, second), dim=1)
        return TensorBatches(canvases, labels + labels[partner]), first_pose

    def fixed_poses(self, split: str) -> tuple[PoseRecord, ...] | None:
        """Both digits' applied poses on the fixed ``split``: ``(digit 1, digit 2)``, the
        digits of channels 0 and 1."""
        if getattr(self, f"{split}_set") is None:
            self.fixed_set(split)
        return getattr(self, f"{split}_poses")

    def pair_train_batch(self, digits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Raw ``uint8`` digits ``(B, h, w)`` and labels ``(B,)`` → canvases
        ``(B, 2, S, S)`` in ``[0, 1]`` and sums ``(B,)``: each digit with the next one of a
        seeded shuffle of the batch, both distorted with fresh parameters."""
        gen = self.train_generator(digits.device)
        b = len(digits)
        order = torch.randperm(b, generator=gen, device=digits.device)
        partner = torch.empty_like(order)
        partner[order] = order.roll(-1)
        images = to_float(digits)
        both = self.distort_train_images(torch.cat((images, images[partner])), gen)
        canvases = torch.cat((both[:b], both[b:]), dim=1)
        return canvases, labels + labels[partner]

    def distort_train_batch(self, digits: Tensor) -> Tensor:
        """Raw ``uint8`` digits → paired canvases ``(B, 2, S, S)`` (labels are not needed
        for the images: see :meth:`pair_train_batch`)."""
        labels = torch.zeros(len(digits), dtype=torch.long, device=digits.device)
        return self.pair_train_batch(digits, labels)[0]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels, _ = batch
        if images.dtype == torch.uint8:  # training: raw digits; fixed sets come rendered
            return self.pair_train_batch(images, labels)
        return images, labels
