"""DataModule: in-memory uint8 digits, whole-batch indexing, distortions on the device.

* Training batches carry raw ``uint8`` digits ``(B, h, w)``; :meth:`on_after_batch_transfer`
  turns them into canvases on the model's device with fresh parameters from a seeded
  per-rank generator.
* Validation and test sets are rendered once in :meth:`setup` from parameters drawn with a
  fixed seed for every index, so they are the same whatever the batch size, worker count,
  device or number of processes. Beside them the module keeps each digit's applied pose
  (:class:`~stnlab.geometry.PoseRecord`, looked up by index: :meth:`fixed_set`);
  the loaders' batches stay ``(images, labels, index)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import psutil
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from stnlab.checks import check_batch_split, check_range
from stnlab.data.distortions import Distortion, NoDistortion, Params
from stnlab.data.sources import DATASETS, ensure_dataset, load_split
from stnlab.errors import ConfigError
from stnlab.geometry import PoseRecord
from stnlab.image_grid import to_bytes
from stnlab.progress import progress_bar

log = logging.getLogger(__name__)

RENDER_CHUNK = 2048
"""Images of a fixed set rendered at once."""


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:,.1f} MiB"


def check_fixed_set_fits(n: int, channels: int, side: int, what: str) -> None:
    """Refuse in one line a fixed set that cannot fit in memory, before rendering it.

    The set keeps ``n`` float32 canvases ``(channels, side, side)``; rendering a chunk of
    :data:`RENDER_CHUNK` also needs its sampling grid and a warped copy. Up to 90% of the
    memory available now (``psutil.virtual_memory().available``) may be used.
    """
    need = 4 * side * side * (n * channels + min(n, RENDER_CHUNK) * (2 + 2 * channels))
    available = psutil.virtual_memory().available
    if need > 0.9 * available:
        raise ConfigError(
            f"the fixed {what} set needs {_size(need)} of memory ({n} canvases of "
            f"{channels}×{side}×{side} float32) but {_size(available)} is available; "
            f"lower data.canvas_size={side} (or data.val_size), or free memory"
        )


class TensorBatches(Dataset):
    """Indexes whole batches out of equally long tensors: ``ds[idx (B,)]`` → tuple of rows."""

    def __init__(self, *tensors: Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: Tensor) -> tuple[Tensor, ...]:
        return (*(t[index] for t in self.tensors), index)


class IndexBatches:
    """Sampler of index batches ``(B,)`` with per-epoch seeded shuffling and rank sharding.

    Every rank sees ``len // world_size`` indices per epoch (the remainder is dropped when
    shuffling, so all ranks do the same number of steps); Lightning calls
    :meth:`set_epoch` so each epoch has its own order.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.size, self.batch_size = size, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> Tensor:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=gen)
            per_rank = self.size // self.world_size
            return order[self.rank * per_rank : (self.rank + 1) * per_rank]
        return torch.arange(self.rank, self.size, self.world_size)

    def __iter__(self) -> Iterator[Tensor]:
        indices = self._indices()
        stop = len(indices) - (len(indices) % self.batch_size if self.drop_last else 0)
        yield from indices[:stop].split(self.batch_size)

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class OrderedIndexBatches(IndexBatches, SequentialSampler):
    """:class:`IndexBatches` in index order, registered as a ``SequentialSampler``.

    Lightning replaces any sampler that is not a ``SequentialSampler`` by a per-sample one
    under ``overfit_batches``; this one already is sequential, so it is kept.
    """

    def __init__(self, size: int, batch_size: int, **kwargs: Any) -> None:
        super().__init__(size, batch_size, shuffle=False, **kwargs)


def to_float(digits: Tensor) -> Tensor:
    """``uint8`` ``(B, h, w)`` or ``(B, C, h, w)`` → float ``(B, C, h, w)`` in ``[0, 1]``."""
    if digits.ndim == 3:
        digits = digits.unsqueeze(1)
    return digits.float().div_(255.0)


class DigitsDataModule(L.LightningDataModule):
    """Distorted digits from an IDX dataset (MNIST by default).

    Args:
        root: folder holding ``<Dataset>/raw/`` files in torchvision's layout.
        variant: the distortion variant's name (``rotated``, ``rts``, …; a label for eval
            and reports).
        source: the image source, ``mnist``, ``fashion_mnist`` or ``cifar10``.
        name, dataset: the names ``variant`` and ``source`` had in configs (and
            checkpoints) written before stnlab gave each its own word; still accepted.
        distortion: the distortion for all splits (``None`` = plain digits).
        canvas_size: side of the images the model sees; must match the distortion's.
        image_size: side of the source images (28 for MNIST, 32 for CIFAR-10).
        channels: image channels (1 for MNIST, 3 for CIFAR-10).
        num_classes: number of labels.
        mean, std: per-channel statistics (the model normalises with them).
        batch_size: the global training batch (the paper's 256): with N processes each
            takes ``batch_size / N`` per step, so the schedule and learning rate do not
            depend on the number of GPUs. Must be divisible by N.
        eval_batch_size: validation/test batch size per process (no gradients, so larger
            is cheaper; it does not change any result).
        val_size: images held out of the training file for validation.
        seed: seeds the train/val split, the shuffling and the training distortions.
        eval_seed: seeds the fixed validation (``eval_seed``) and test (``eval_seed + 1``)
            distortion parameters; keep it fixed to compare runs.
        num_workers, pin_memory: DataLoader options (0 workers is fastest: a batch is one
            indexing operation).
        allow_fetch: fetch missing files in :meth:`prepare_data`.
        curriculum: a curriculum of rotation range: over this fraction of the training
            steps the training digits' angles grow linearly from none to the full
            ``max_angle`` of the distortion (0 = off). Validation and test sets keep the
            full range. Needs a distortion with a rotation (``max_angle``).
    """

    def __init__(
        self,
        root: str = "data",
        variant: str | None = None,
        source: str = "mnist",
        distortion: Distortion | None = None,
        canvas_size: int = 28,
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
        batch_size: int = 256,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        seed: int = 0,
        eval_seed: int = 1234,
        num_workers: int = 0,
        pin_memory: bool = False,
        allow_fetch: bool = True,
        name: str | None = None,
        dataset: str | None = None,
        curriculum: float = 0.0,
    ) -> None:
        super().__init__()
        variant = variant if variant is not None else name
        source = dataset if dataset is not None else source
        if source not in DATASETS:
            raise ConfigError(f"data.source={source!r} is unknown; valid: {DATASETS}")
        for key, value in (("canvas_size", canvas_size), ("image_size", image_size)):
            check_range(f"data.{key}", value, integer=True, minimum=1, hint=" (pixels)")
        self.distortion = distortion if distortion is not None else NoDistortion(canvas_size)
        if self.distortion.canvas_size != canvas_size:
            raise ConfigError(
                f"data.canvas_size={canvas_size} but the distortion renders "
                f"{self.distortion.canvas_size}×{self.distortion.canvas_size}; set both alike"
            )
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            check_range(f"data.{key}", value, integer=True, minimum=1)
        check_range(
            "data.num_workers",
            num_workers,
            integer=True,
            minimum=0,
            hint=" (0: batches are indexed in the main process, the fastest here)",
        )
        check_range(
            "data.curriculum", curriculum, minimum=0, maximum=1, hint=" (a share of the steps)"
        )
        if curriculum > 0 and not hasattr(self.distortion, "max_angle"):
            raise ConfigError(
                f"data.curriculum={curriculum} ramps the rotation range, but "
                f"{type(self.distortion).__name__} has none; valid: 0, or a distortion "
                "with max_angle (data=rotated, rts)"
            )
        self.curriculum = float(curriculum)
        self.root, self.source, self.variant = str(root), source, variant
        self.canvas_size, self.image_size = canvas_size, image_size
        self.channels, self.num_classes = channels, num_classes
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.seed, self.eval_seed = val_size, seed, eval_seed
        self.num_workers, self.pin_memory, self.allow_fetch = num_workers, pin_memory, allow_fetch
        self.train_set: TensorBatches | None = None
        self.val_set: TensorBatches | None = None
        self.test_set: TensorBatches | None = None
        self.val_pose: PoseRecord | None = None
        self.test_pose: PoseRecord | None = None
        self._train_gen: torch.Generator | None = None
        self._pending_gen_state: Tensor | None = None

    @property
    def source_channels(self) -> int:
        """Channels of one source image; the canvas has ``channels``."""
        return self.channels

    # ----------------------------------------------------------------- set-up
    def prepare_data(self) -> None:
        ensure_dataset(self.root, self.source, allow_fetch=self.allow_fetch)

    def _load(self, split: str) -> tuple[Tensor, Tensor]:
        images, labels = load_split(self.root, self.source, split, allow_fetch=False)
        shape = (self.source_channels, self.image_size, self.image_size)
        got = (1, *images.shape[1:]) if images.ndim == 3 else tuple(images.shape[1:])
        if got != shape:
            raise ConfigError(
                f"{self.source} images are {got} (C, H, W) but the data config says "
                f"channels={self.channels}, image_size={self.image_size}; pick the matching "
                "data/source (mnist | fashion_mnist | cifar10)"
            )
        return images, labels

    def _test_digits(self) -> tuple[Tensor, Tensor]:
        """The source digits of the fixed test set and their labels, in its order."""
        return self._load("test")

    def clean_test_digits(self) -> Tensor:
        """The fixed test set's source digits before any distortion, in its order:
        ``uint8`` ``(N, h, w)`` (``(N, C, h, w)`` for colour sources)."""
        return self._test_digits()[0]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.val_set is None:
            images, labels = self._load("train")
            if not 0 < self.val_size < len(images):
                raise ConfigError(
                    f"data.val_size={self.val_size} must be between 1 and {len(images) - 1} "
                    f"(the training file holds {len(images)} images)"
                )
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
            train_idx, val_idx = order[self.val_size :], order[: self.val_size]
            self.train_set = TensorBatches(images[train_idx], labels[train_idx])
            val_images, val_labels = images[val_idx], labels[val_idx]
            self.val_set, self.val_pose = self._render_fixed(
                val_images, val_labels, self.eval_seed, "validation"
            )
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = self._test_digits()
            self.test_set, self.test_pose = self._render_fixed(
                images, labels, self.eval_seed + 1, "test"
            )

    def _render_fixed(
        self, images: Tensor, labels: Tensor, seed: int, split: str
    ) -> tuple[TensorBatches, PoseRecord | None]:
        """Render every image once with parameters drawn for its index from ``seed``; the
        pose record of those parameters (``None`` for a distortion that keeps none)."""
        gen = torch.Generator().manual_seed(seed)
        canvases, pose = self._render_digits(images, images, gen, split)
        return TensorBatches(canvases, labels), pose

    def _render_digits(
        self, digits: Tensor, pool: Tensor, gen: torch.Generator, split: str
    ) -> tuple[Tensor, PoseRecord | None]:
        """Digits ``uint8`` ``(N, h, w)`` → canvases ``(N, C, S, S)`` with parameters drawn
        from ``gen``, and their pose record (``None`` for a distortion that keeps none).
        ``pool`` ``uint8`` is the set clutter sources index. A bar (rank 0, on a terminal)
        counts the rendered images of ``split``."""
        check_fixed_set_fits(len(digits), self.channels, self.canvas_size, split)
        params = self.fixed_params(len(digits), len(pool), gen)
        pool = to_float(pool)
        chunks, poses = [], []
        description = f"rendering the {self.variant or self.source} {split} set"
        with progress_bar(description, len(digits), enabled=self._rank_info()[0] == 0) as bar:
            for start in range(0, len(digits), RENDER_CHUNK):
                part = {k: v[start : start + RENDER_CHUNK] for k, v in params.items()}
                chunk = to_float(digits[start : start + RENDER_CHUNK])
                layers = getattr(self.distortion, "render_layers", None)
                digit, clutter = layers(chunk, part, pool=pool) if layers else (None, None)
                if clutter is None:
                    chunks.append(self.distortion.render(chunk, part, pool=pool))
                else:
                    chunks.append(torch.maximum(digit, clutter))
                with contextlib.suppress(NotImplementedError):
                    pose = self.distortion.pose_record(part, len(chunk))
                    if clutter is not None:  # which ink is which, for digit/clutter kept
                        pose = dataclasses.replace(
                            pose, digit_ink=to_bytes(digit), clutter_ink=to_bytes(clutter)
                        )
                    poses.append(pose)
                bar.advance(len(chunk))
        pose = PoseRecord.cat(poses) if len(poses) == len(chunks) and poses else None
        return torch.cat(chunks), pose

    def fixed_params(self, n: int, pool_size: int, gen: torch.Generator) -> Params:
        """The distortion's parameters for ``n`` digits of a fixed set, drawn from ``gen``
        on the CPU; ``pool_size`` is the size of the set clutter patches come from."""
        return self.distortion.sample(n, gen, torch.device("cpu"))

    def fixed_set(self, split: str) -> tuple[Tensor, Tensor, PoseRecord | None]:
        """The fixed ``split`` (``"val"`` or ``"test"``): canvases ``(N, C, S, S)`` in
        ``[0, 1]``, labels ``(N,)`` and each image's applied pose (``None`` when the
        distortion keeps no record; for images of several digits, the first digit's:
        :meth:`fixed_poses` has them all). Sets itself up when needed."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        if getattr(self, f"{split}_set") is None:
            self.setup("validate" if split == "val" else "test")
        data: TensorBatches = getattr(self, f"{split}_set")
        images, labels = data.tensors
        poses = self.fixed_poses(split)
        return images, labels, None if poses is None else poses[0]

    def fixed_poses(self, split: str) -> tuple[PoseRecord, ...] | None:
        """Each digit's applied pose on the fixed ``split``: one record per digit of an
        image (one here; :class:`AdditionDataModule` has two), ``None`` when the
        distortion keeps no record."""
        if getattr(self, f"{split}_set") is None:
            self.fixed_set(split)
        pose = getattr(self, f"{split}_pose")
        return None if pose is None else (pose,)

    # ---------------------------------------------------------------- loaders
    def _rank_info(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, data: TensorBatches | None, *, train: bool) -> DataLoader:
        if data is None:
            raise RuntimeError("DigitsDataModule.setup() must run before asking for a loader")
        rank, world = self._rank_info()
        overfit = self.trainer is not None and bool(self.trainer.overfit_batches)
        if train:
            check_batch_split(self.batch_size, world, f"trainer world size {world}")
            if len(data) < self.batch_size:  # whole batches only: not one training step
                raise ConfigError(
                    f"data.batch_size={self.batch_size} is larger than the training split "
                    f"({len(data)} images), so no training step would run; valid: "
                    f"data.batch_size <= {len(data)}, or a smaller data.val_size"
                )
        batch_size = self.batch_size // world if train else self.eval_batch_size
        options = {"seed": self.seed, "drop_last": train, "rank": rank, "world_size": world}
        if train and not overfit:
            sampler: IndexBatches = IndexBatches(len(data), batch_size, shuffle=True, **options)
        else:
            sampler = OrderedIndexBatches(len(data), batch_size, **options)
        return DataLoader(
            data,
            batch_size=None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    # ------------------------------------------------------------ distortions
    def train_generator(self, device: torch.device) -> torch.Generator:
        """The seeded generator of training distortions on ``device`` (one stream per rank)."""
        if self._train_gen is None or self._train_gen.device != device:
            rank, _ = self._rank_info()
            self._train_gen = torch.Generator(device=device).manual_seed(
                self.seed * 7919 + 1 + rank
            )
            if self._pending_gen_state is not None:
                self._train_gen.set_state(self._pending_gen_state)
                self._pending_gen_state = None
        return self._train_gen

    def rotation_strength(self) -> float:
        """The share of the full rotation range the training digits get at this step:
        ``global_step / (curriculum · total steps)``, capped at 1 (1 without a curriculum
        or a trainer)."""
        trainer = self.trainer
        if self.curriculum <= 0 or trainer is None:
            return 1.0
        ramp = self.curriculum * max(int(trainer.estimated_stepping_batches), 1)
        return min(1.0, trainer.global_step / ramp)

    def distort_train_images(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Training images ``(B, C, h, w)`` in ``[0, 1]`` → canvases ``(B, C, S, S)``, with
        fresh parameters from ``generator`` and the rotation range of
        :meth:`rotation_strength`."""
        params = self.distortion.sample(images.shape[0], generator, images.device)
        strength = self.rotation_strength()
        if strength < 1.0:
            params = {**params, "angle": params["angle"] * strength}
        return self.distortion.render(images, params)

    def distort_train_batch(self, digits: Tensor) -> Tensor:
        """Raw ``uint8`` digits ``(B, C, h, w)`` on any device → canvases ``(B, C, S, S)``
        in ``[0, 1]``."""
        return self.distort_train_images(to_float(digits), self.train_generator(digits.device))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels, _ = batch
        # Training batches carry raw uint8 digits; fixed sets arrive already rendered.
        if images.dtype == torch.uint8:
            images = self.distort_train_batch(images)
        return images, labels

    def probe_batch(self, n: int) -> tuple[Tensor, Tensor]:
        """The first ``n`` fixed validation canvases ``(n, C, S, S)`` and their labels."""
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        images, labels = self.val_set.tensors
        return images[:n], labels[:n]

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        if self._train_gen is None:
            return {}
        return {"train_generator": self._train_gen.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_gen_state = state_dict.get("train_generator")
        self._train_gen = None
