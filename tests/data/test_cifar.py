"""CIFAR-10 as an image source, on small batch files the tests write (no download here)."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, open_dict

from stnlab.data import sources
from stnlab.data.sources import DataSourceError
from stnlab.tasks import train


@pytest.fixture
def fake_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``<root>/cifar-10-batches-py`` with 6 tiny batches (40 train, 20 test images)."""
    folder = tmp_path / "cifar" / sources.CIFAR10_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5s = {}
    for name in sources.CIFAR10_FILES:
        n = 20 if name == "test_batch" else 8
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
        md5s[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    monkeypatch.setattr(sources, "CIFAR10_FILES", md5s)
    monkeypatch.setattr(sources, "CIFAR10_URL", f"file://{tmp_path}/nowhere.tar.gz")
    return tmp_path / "cifar"


def test_load_cifar10_shapes_and_channel_layout(fake_cifar: Path) -> None:
    images, labels = sources.load_split(fake_cifar, "cifar10", "train")
    assert images.shape == (40, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (40,) and labels.dtype == torch.int64
    raw = pickle.loads((fake_cifar / sources.CIFAR10_FOLDER / "data_batch_1").read_bytes())
    first = torch.from_numpy(raw[b"data"][0])
    assert torch.equal(images[0, 1].flatten(), first[1024:2048])  # green plane
    test_images, _ = sources.load_split(fake_cifar, "cifar10", "test")
    assert test_images.shape == (20, 3, 32, 32)


def test_corrupted_cifar_file_and_missing_archive_are_clear_errors(fake_cifar: Path) -> None:
    target = fake_cifar / sources.CIFAR10_FOLDER / "data_batch_3"
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(DataSourceError, match="data_batch_3 is corrupted or incomplete"):
        sources.ensure_dataset(fake_cifar, "cifar10")
    target.unlink()
    with pytest.raises(DataSourceError) as err:
        sources.ensure_dataset(fake_cifar, "cifar10")
    assert "missing data_batch_3" in str(err.value)
    assert str(fake_cifar / sources.CIFAR10_FOLDER) in str(err.value)


def test_stn_cnn_trains_on_distorted_cifar(
    make_cfg: Callable[..., DictConfig], fake_cifar: Path
) -> None:
    cfg = make_cfg(
        "model=stn_cnn", "data=rts", "data/source=cifar10", "data.val_size=8", "debug=fdr"
    )
    with open_dict(cfg):
        cfg.data.root = str(fake_cifar)
    assert cfg.data.channels == 3 and cfg.model.net.backbone.in_channels == 3
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
