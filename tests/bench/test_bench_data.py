"""The data benchmark runs end to end (tiny settings) and its peer matches each canvas."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from stnlab.bench import data as data_bench


@pytest.mark.parametrize(
    ("variant", "side"),
    [
        ("rotated", 28),
        ("rts", 42),
        ("projective", 28),
        ("elastic", 28),
        ("translated", 60),
        ("cluttered", 60),
    ],
)
def test_peer_pipeline_renders_the_same_canvas(variant: str, side: int) -> None:
    transform, clutter = data_bench.peer_transform(variant)
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    dataset = data_bench.PerSampleDigits(images, torch.zeros(4), transform, clutter)
    image, _ = dataset[0]
    assert image.shape == (1, side, side) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_run_reports_every_variant(fake_mnist: Path, capsys: pytest.CaptureFixture) -> None:
    args = argparse.Namespace(
        variants=["rts", "cluttered"],
        batch_size=16,
        windows=1,
        window_batches=1,
        workers=[0],
        data_dir=str(fake_mnist),
        override=["data.val_size=100"],
    )
    results = data_bench.run(args)
    assert set(results) == {"rts", "cluttered"}
    for figures in results.values():
        assert figures["stnlab_samples_per_s"] > 0 and figures["peer_samples_per_s"] > 0
        ratio = figures["stnlab_samples_per_s"] / figures["peer_samples_per_s"]
        assert figures["ratio"] == pytest.approx(ratio, abs=0.006)
    assert "cluttered" in capsys.readouterr().out
