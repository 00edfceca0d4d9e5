"""The data benchmark runs end to end (tiny settings, a controlled clock) and its peer
matches each canvas."""

from __future__ import annotations

import argparse
from collections.abc import Callable
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


def test_run_reports_every_variant(
    fake_mnist: Path, capsys: pytest.CaptureFixture, ticking_clock: Callable
) -> None:
    ticking_clock(0.25)  # every timed window lasts 0.25 s
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
    # stnlab: 1 batch of 16 per window; peer: max(2, 1 // 4) = 2 batches of 16 per window
    figures = {"stnlab_samples_per_s": 64.0, "peer_samples_per_s": 128.0, "ratio": 0.5}
    assert results == {"rts": figures, "cluttered": figures}
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == [[v, "64", "(64–64)", "128", "0", "0.5×"] for v in ("rts", "cluttered")]
