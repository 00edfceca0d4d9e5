"""Co-localisation data (Jaderberg et al. 2015, appendix A.2): images of one digit class,
each 28×28 digit at a uniform random place of an 84×84 black canvas; the cluttered variant
adds 16 random 6×6 crops of other MNIST training digits (any class) as distractors.

The paper optimises on a set of 100 such images per class. Here that set is the training
set (``train_size`` digits of the class from MNIST's training file, placed once with
``seed``); validation (``val_size`` other digits of the class from the training file) and
test (the first ``test_size`` digits of the class in MNIST's test file) are rendered once
from ``eval_seed`` and ``eval_seed + 1``, so they are the same whatever the batch size.
Which training-file digits go to training and which to validation is drawn from
``eval_seed`` too.
Clutter always comes from the whole training file.

Every batch is ``(images, boxes)``: the canvases ``(B, 1, 84, 84)`` and each digit's true
box ``(B, 4)`` = ``(x0, y0, x1, y1)`` in canvas pixels. The boxes only measure the
localisation (IoU); training never reads them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from stnlab.checks import check_range
from stnlab.data.datamodule import DigitsDataModule, TensorBatches
from stnlab.data.distortions import ClutteredPlacement, Params
from stnlab.errors import ConfigError
from stnlab.geometry import PoseRecord, corners_box


class ColocalisationDataModule(DigitsDataModule):
    """One digit class at random places of a large canvas, with its true boxes.

    Takes :class:`~stnlab.data.datamodule.DigitsDataModule`'s arguments (the distortion
    must be a :class:`~stnlab.data.distortions.ClutteredPlacement`; ``num_patches: 0`` is
    the translated-only variant), and:

    Args:
        digit: the class to co-localise, 0–9.
        train_size: images of the optimisation set (the paper's 100).
        val_size: other images of the class, from the training file, for validation.
        test_size: the first images of the class in the test file (at most all of them).
    """

    def __init__(
        self,
        digit: int = 8,
        train_size: int = 100,
        val_size: int = 500,
        test_size: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(val_size=val_size, **kwargs)
        check_range("data.digit", digit, integer=True, minimum=0, maximum=self.num_classes - 1)
        for key, value in (("train_size", train_size), ("test_size", test_size)):
            check_range(f"data.{key}", value, integer=True, minimum=1)
        check_range("data.val_size", val_size, integer=True, minimum=1)
        if not isinstance(self.distortion, ClutteredPlacement):
            raise ConfigError(
                "data=colocalisation places digits with stnlab.data.distortions."
                f"ClutteredPlacement (num_patches: 0 for no clutter), got {self.distortion!r}"
            )
        if self.batch_size > train_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than data.train_size="
                f"{train_size}: no full training batch (the last one is dropped)"
            )
        self.digit, self.train_size, self.test_size = digit, train_size, test_size
        self.train_pose: PoseRecord | None = None
        self._pool: Tensor | None = None

    def _clutter_pool(self) -> Tensor:
        """Every digit of the training file ``uint8`` ``(N, h, w)``: clutter comes from these."""
        if self._pool is None:
            self._pool = self._load("train")[0]
        return self._pool

    def _of_class(self, labels: Tensor, split: str, wanted: int) -> Tensor:
        """Indices ``(M,)`` of the chosen class in ``labels``, at least ``wanted`` of them."""
        found = (labels == self.digit).nonzero().squeeze(1)
        if len(found) < wanted:
            raise ConfigError(
                f"the {split} file holds {len(found)} images of digit {self.digit}, fewer "
                f"than the {wanted} asked for; lower data.train_size/val_size/test_size"
            )
        return found

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.val_set is None:
            pool, labels = self._load("train")
            self._pool = pool  # clutter comes from the same file: read it once
            found = self._of_class(labels, "training", self.train_size + self.val_size)
            order = found[
                torch.randperm(len(found), generator=torch.Generator().manual_seed(self.eval_seed))
            ]
            train_idx = order[: self.train_size]
            val_idx = order[self.train_size : self.train_size + self.val_size]
            self.train_set, self.train_pose = self._render_fixed(
                pool[train_idx], labels[train_idx], self.seed, "training"
            )
            self.val_set, self.val_pose = self._render_fixed(
                pool[val_idx], labels[val_idx], self.eval_seed, "validation"
            )
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = self._test_digits()
            self.test_set, self.test_pose = self._render_fixed(
                images, labels, self.eval_seed + 1, "test"
            )

    def _test_digits(self) -> tuple[Tensor, Tensor]:
        """The first ``test_size`` test digits of the chosen class, and their labels."""
        images, labels = self._load("test")
        test_idx = self._of_class(labels, "test", 1)[: self.test_size]
        return images[test_idx], labels[test_idx]

    def _render_fixed(
        self, images: Tensor, labels: Tensor, seed: int, split: str
    ) -> tuple[TensorBatches, PoseRecord | None]:
        """Canvases ``(N, 1, S, S)`` and true boxes ``(N, 4)`` of ``images``, with
        parameters drawn from ``seed`` and clutter from the whole training file."""
        gen = torch.Generator().manual_seed(seed)
        canvases, pose = self._render_digits(images, self._clutter_pool(), gen, split)
        assert pose is not None  # ClutteredPlacement keeps one
        return TensorBatches(canvases, corners_box(pose.corners)), pose

    def fixed_params(self, n: int, pool_size: int, gen: torch.Generator) -> Params:
        """The placement's parameters, with clutter sources drawn uniformly from the pool
        (every training digit) instead of from the set itself."""
        params = super().fixed_params(n, pool_size, gen)
        params["source"] = torch.randint(0, pool_size, params["source"].shape, generator=gen)
        return params
