"""The MNIST-addition models: shapes, parameter counts, what each transformer sees and
what the classifier reads; pose recovery of each transformer against each digit."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from pose_oracle import oracle, undo
from stnlab.analysis.evaluate import evaluate_checkpoint
from stnlab.data.addition import AdditionDataModule
from stnlab.geometry import AffineTransform
from stnlab.image_grid import CHANNEL_COLOURS
from stnlab.models.pose_recovery import best_matching, match_poses
from stnlab.tasks import train

PRESETS = ["fcn", "cnn", "st_fcn", "2st_fcn", "st_cnn", "2st_cnn"]


def _net(make_cfg: Callable[..., DictConfig], preset: str) -> torch.nn.Module:
    return instantiate(make_cfg(f"experiment=addition/{preset}").model).net


def test_every_model_maps_two_channels_to_19_sums_with_comparable_size(
    make_cfg: Callable[..., DictConfig],
) -> None:
    x = torch.rand(5, 2, 42, 42)
    sizes = {}
    for preset in PRESETS:
        net = _net(make_cfg, preset).eval()
        assert net(x).shape == (5, 19), preset
        sizes[preset] = sum(p.numel() for p in net.parameters())
    # as in the paper, the models have about the same number of weights (within 10%)
    assert max(sizes.values()) / min(sizes.values()) < 1.1, sizes


@pytest.mark.parametrize("preset", ["2st_fcn", "2st_cnn"])
def test_each_transformer_sees_both_channels_and_the_classifier_reads_both_outputs(
    make_cfg: Callable[..., DictConfig], preset: str
) -> None:
    net = _net(make_cfg, preset).eval()
    transformer = net.transformer
    assert transformer.num_transformers == 2
    torch.nn.init.normal_(transformer.regressor.weight, std=0.05)  # leave the identity
    x = torch.rand(3, 2, 42, 42)
    changed = x.clone()
    changed[:, 1] = torch.rand(3, 42, 42)  # only the second channel differs
    for k in range(2):
        theta = transformer.warp_params(x, k)[1]
        assert theta.shape == (3, 6)
        assert not torch.allclose(theta, transformer.warp_params(changed, k)[1])
    outputs = net.transformed_inputs(x)
    assert len(outputs) == 2 and all(o.shape[:2] == (3, 2) for o in outputs)
    assert not torch.allclose(outputs[0], outputs[1])  # two different warps
    seen = {}
    hook = net.backbone.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    net(x)
    hook.remove()
    expected = (torch.cat(outputs, dim=1) - net.mean) / net.std
    assert seen["x"].shape[1] == 4
    torch.testing.assert_close(seen["x"], expected)


def test_best_matching_pairs_each_transformer_with_the_digit_it_took() -> None:
    assert best_matching({(0, 0): 0.2, (0, 1): 0.9, (1, 0): 0.8, (1, 1): 0.9}) == [
        (0, 1),
        (1, 0),
    ]
    assert best_matching({(0, 0): float("nan"), (0, 1): -0.5}) == [(0, 1)]
    assert best_matching({(0, 0): 0.3, (1, 0): 0.6}) == [(1, 0)]  # two transformers, one digit


def test_transformers_that_undo_one_digit_each_score_1_on_their_own_digit(
    make_cfg: Callable[..., DictConfig],
) -> None:
    dm: AdditionDataModule = instantiate(make_cfg("data=addition").data)
    images, _, _ = dm.fixed_set("test")
    poses = dm.fixed_poses("test")
    assert poses is not None
    affine = AffineTransform()
    # transformer 1 undoes digit 2's pose, transformer 2 digit 1's
    theta = torch.cat((undo(affine, poses[1], 42), undo(affine, poses[0], 42)), dim=1)
    matching = match_poses(oracle(affine, images, theta, num_transformers=2), images, poses)
    assert matching.matched == [(0, 1), (1, 0)]
    undone = {pair: m.metrics["undone"] for pair, m in matching.pairs.items()}
    assert undone[(0, 1)] == pytest.approx(1.0, abs=1e-4)
    assert undone[(1, 0)] == pytest.approx(1.0, abs=1e-4)
    assert undone[(0, 0)] < 0.5 and undone[(1, 1)] < 0.5  # the other digit stays posed
    logged = matching.logged()
    assert logged["undone"] == pytest.approx(1.0, abs=1e-4)
    assert logged["undone_t1_d2"] == pytest.approx(1.0, abs=1e-4)
    assert logged["undone_t1_d1"] == pytest.approx(undone[(0, 0)])


def test_a_two_transformer_run_shows_both_outputs_and_logs_each_pair(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg(
        "experiment=addition/2st_cnn",
        "debug=limit",
        "trainer.limit_test_batches=1.0",
        output_dir=tmp_path / "run",
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/err"] <= 100.0
    run = tmp_path / "run"
    grid = np.asarray(Image.open(run / "transform_grids" / "epoch_002.png").convert("RGB"))
    # three panels of 4×4 probes (input 42 px; the two outputs pooled to 21 px and shown
    # enlarged 2×), zoom 3
    tiles = [4 * (side + 2) + 2 for side in (42, 42, 42)]
    assert grid.shape[1] == 3 * (sum(tiles) + 2 * 4)
    inputs = grid[:, : 3 * tiles[0]].reshape(-1, 3).astype(int)
    for colour in CHANNEL_COLOURS:  # each digit's colour shows in the input panel
        target = np.round(np.array(colour) * 255)
        assert (np.abs(inputs - target).max(axis=1) <= 2).sum() > 20, colour
    with open(run / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/pose/undone")]
    assert len(rows) == 2
    for k in (1, 2):
        for j in (1, 2):
            assert np.isfinite(float(rows[-1][f"val/pose/undone_t{k}_d{j}"]))
    # eval tests the checkpoint on its own variant only: no single-digit variant fits
    results = evaluate_checkpoint(metrics["test_ckpt"], cfg.paths.data_dir, variants="fitting")
    assert [r["variant"] for r in results] == ["addition"]
    assert results[0]["samples"] == 200 and results[0]["pose_undone"] is not None
    assert results[0]["error_pct"] == pytest.approx(metrics["test/err"], abs=1e-3)
