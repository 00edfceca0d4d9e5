"""Shared fixtures: a small synthetic MNIST in IDX format and composed Hydra configs."""

from __future__ import annotations

import builtins
import errno
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from cli_helper import (
    idx_bytes,
    mnist_arrays,
    trusted_mnist_spec,
    with_tiny_run_base,
    write_mnist_raw,
)
from stnlab.config import compose_config
from stnlab.data import sources

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Fast tests never touch the network or a W&B server.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28×28 uint8 images of 10 classes: a bright bar whose position codes the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
    for i, label in enumerate(labels):
        row = 4 + 2 * int(label)
        images[i, row : row + 2, 6:22] = 255
    return images, labels


@pytest.fixture
def idx_files() -> dict[str, bytes]:
    """The four MNIST files (20 train and 20 test synthetic digits) as IDX bytes."""
    train_x, train_y = synthetic_digits(20, 2)
    test_x, test_y = synthetic_digits(20, 3)
    arrays = mnist_arrays((train_x, train_y), (test_x, test_y))
    return {key: idx_bytes(array) for key, array in arrays.items()}


@pytest.fixture(scope="session")
def fake_mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with ``MNIST/raw/`` holding 600 train and 200 test synthetic digits."""
    train_x, train_y = synthetic_digits(600, 0)
    test_x, test_y = synthetic_digits(200, 1)
    arrays = mnist_arrays((train_x, train_y), (test_x, test_y))
    return write_mnist_raw(tmp_path_factory.mktemp("fake_data"), arrays)


@pytest.fixture
def fake_mnist(fake_mnist_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make ``data.source=mnist`` accept the synthetic files (their checksums, no fetching)."""
    monkeypatch.setitem(sources.SPECS, "mnist", trusted_mnist_spec(fake_mnist_root))
    return fake_mnist_root


TEST_SAMPLES = 8
"""Cells of ``test_predictions.png`` in the tests' runs (the config's 64 unless a test sets
``callbacks.error_analysis.num_samples``): drawing 64 cells with matplotlib took most of a
one-batch run's time. ``tests/callbacks/test_dashboards.py`` checks the full 64."""


def compose_run(
    config_name: str, overrides: list[str], output_dir: Path, data_dir: Path
) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``, its paths set as a run of it would
    have them (Hydra's config registered, then dropped as the task sees it); the error
    analysis draws :data:`TEST_SAMPLES` samples unless ``overrides`` choose."""
    cfg = compose_config(config_name, overrides, output_dir=output_dir, data_dir=data_dir)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        analysis = OmegaConf.select(cfg, "callbacks.error_analysis")
        chosen = any("error_analysis.num_samples" in o for o in overrides)
        if isinstance(analysis, DictConfig) and "num_samples" in analysis and not chosen:
            analysis.num_samples = TEST_SAMPLES
    return cfg


@pytest.fixture
def make_cfg(fake_mnist: Path, tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose ``conf/train.yaml`` with overrides, on the synthetic data, into ``tmp_path``."""

    def _make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        small = ["data.val_size=100", "data.batch_size=32", "data.eval_batch_size=64"]
        return compose_run(
            "train",
            with_tiny_run_base([*small, "logger=csv", *overrides]),
            output_dir or tmp_path / "run",
            fake_mnist,
        )

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def tiny_run(fake_mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One trained ST-CNN shared by the tests that read a checkpoint (eval, predict, export,
    checkpoint safety): 2 epochs of 5 batches on the synthetic rotated digits (``debug=limit``),
    tested on its whole test set (200 digits). ``(best.ckpt, the run's metrics)``; its run
    folder holds ``checkpoints/last.ckpt`` too. Tests copy it before changing it."""
    from stnlab.tasks import train

    out = tmp_path_factory.mktemp("tiny_run") / "train"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sources.SPECS, "mnist", trusted_mnist_spec(fake_mnist_root))
        small = ["data.val_size=100", "data.batch_size=32", "data.eval_batch_size=64"]
        overrides = [*small, "logger=csv", "model=stn_cnn", "data=rotated", "debug=limit"]
        cfg = compose_run("train", with_tiny_run_base(overrides), out, fake_mnist_root)
        with open_dict(cfg):
            cfg.trainer.limit_test_batches = 1.0
        metrics = train(cfg)
    GlobalHydra.instance().clear()
    return Path(metrics["test_ckpt"]), metrics


@pytest.fixture
def make_task_cfg(fake_mnist: Path, tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose another entry point's config (``eval``, ``robustness``) on the synthetic data."""

    def _make(config_name: str, *overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_run(
            config_name,
            ["logger=csv", *overrides],
            output_dir or tmp_path / config_name,
            fake_mnist,
        )

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """``read_only(folder)``: below ``folder``, creating folders and opening files for
    writing fail with ``EROFS`` for the rest of the test, as on a read-only mount.

    ``chmod`` cannot simulate this when the tests run as root (root writes anyway), so the
    calls themselves refuse; reading is unaffected.
    """
    blocked: list[Path] = []
    real_open, real_mkdir = builtins.open, os.mkdir

    def refused(path: object) -> bool:
        if not isinstance(path, str | bytes | os.PathLike):
            return False  # a file descriptor
        target = Path(os.path.abspath(os.fsdecode(path)))
        return any(target == b or b in target.parents for b in blocked)

    def deny(path: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))  # type: ignore[arg-type]

    def guarded_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if any(c in mode for c in "wax+") and refused(file):
            deny(file)
        return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    def guarded_mkdir(path: object, *args: object, **kwargs: object) -> None:
        if refused(path):
            deny(path)
        real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)
    return lambda folder: blocked.append(Path(folder).resolve())
