"""Co-localisation (the paper's appendix A.2): data of one class with true boxes, the
triplet hinge, box IoU, the box of an attention warp, and a tiny run end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from stnlab.errors import ConfigError
from stnlab.geometry import AttentionTransform, box_iou, output_box
from stnlab.models import triplet_hinge
from stnlab.models.colocaliser import choose_crops, crop_grid, descriptor
from stnlab.tasks.train import train

SMALL = (
    "data.train_size=20",
    "data.val_size=10",
    "data.test_size=10",
    "data.batch_size=10",
    "data.eval_batch_size=10",
)
"""The synthetic MNIST has about 60 training and 20 test images of each class."""


# ------------------------------------------------------------------------ losses, boxes
def test_triplet_hinge_by_hand() -> None:
    crops = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    negatives = torch.tensor([[0.0, 1.0], [1.0, 3.0], [0.0, 2.0]])
    # ‖e_n − r_n‖²: 1, 9, 0.  ‖e_n − e_m‖²: (0,1) 1, (0,2) 4, (1,2) 5.
    # n=0: max(0, 1−1+1) + max(0, 4−1+1) = 1 + 4
    # n=1: max(0, 1−9+1) + max(0, 5−9+1) = 0 + 0
    # n=2: max(0, 4−0+1) + max(0, 5−0+1) = 5 + 6
    assert triplet_hinge(crops, negatives, 1.0, "sum").item() == pytest.approx(16.0)
    assert triplet_hinge(crops, negatives, 1.0).item() == pytest.approx(16.0 / 6)
    # α = 0: 0 + 3, 0 + 0, 4 + 5
    assert triplet_hinge(crops, negatives, 0.0, "sum").item() == pytest.approx(12.0)


def test_triplet_hinge_has_finite_gradients_for_equal_crops() -> None:
    crops = torch.ones(3, 4, requires_grad=True)
    triplet_hinge(crops, torch.zeros(3, 4)).backward()
    assert torch.isfinite(crops.grad).all()


def test_box_iou_on_hand_made_boxes() -> None:
    a = torch.tensor([[0.0, 0, 2, 2], [0.0, 0, 2, 2], [0.0, 0, 2, 2], [0.0, 0, 4, 2]])
    b = torch.tensor([[0.0, 0, 2, 2], [3.0, 3, 5, 5], [1.0, 1, 3, 3], [1.0, 0, 3, 2]])
    # identical; disjoint; overlap 1 of union 4 + 4 − 1; overlap 4 of union 8
    assert box_iou(a, b).tolist() == pytest.approx([1.0, 0.0, 1 / 7, 0.5])


def test_the_box_of_an_attention_warp() -> None:
    # scale 0.5: the output square is half the 84-pixel input, 42 px, centred at
    # ((1 + 0.25)·42, (1 − 0.5)·42) = (52.5, 21)
    theta = torch.tensor([[0.5, 0.25, -0.5], [1.0, 0.0, 0.0]])
    box = output_box(AttentionTransform(), theta, 84)
    expected = torch.tensor([[31.5, 0.0, 73.5, 42.0], [0.0, 0.0, 84.0, 84.0]])
    torch.testing.assert_close(box, expected)


# ---------------------------------------------------------------------------- the data
def _data(make_cfg, *overrides: str):
    cfg = make_cfg("experiment=colocalisation/t", "digit=3", *SMALL, *overrides)
    data = instantiate(cfg.data)
    data.setup("fit")
    data.setup("test")
    return data


def test_data_one_class_with_the_boxes_of_its_ink(make_cfg) -> None:
    data = _data(make_cfg)
    for split, size in (("train", 20), ("val", 10), ("test", 10)):
        images, boxes = getattr(data, f"{split}_set").tensors
        assert images.shape == (size, 1, 84, 84) and boxes.shape == (size, 4)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 84).all()
        assert torch.allclose(boxes[:, 2:] - boxes[:, :2], torch.full((size, 2), 28.0))
        for image, (x0, y0, x1, y1) in zip(images[:, 0], boxes.tolist(), strict=True):
            rows, cols = (image > 1e-3).nonzero(as_tuple=True)  # the synthetic digits'
            # noise fills their whole 28×28 box: ink from the box's first to last pixel
            assert abs(cols.min().item() - x0) <= 1 and abs(cols.max().item() + 1 - x1) <= 1
            assert abs(rows.min().item() - y0) <= 1 and abs(rows.max().item() + 1 - y1) <= 1
            # the synthetic label is a bright bar at rows 4 + 2·label, 5 + 2·label
            bar = (image > 0.5).nonzero()[:, 0].float().mean().item() - y0
            assert round((bar - 4.5) / 2) == 3
    clean = data.clean_test_digits()  # the source digits of the test set, in its order
    assert clean.shape == (10, 28, 28)
    assert (clean[:, 10:12, 6:22] == 255).all()  # every one a 3: its bar at rows 10–11


def test_clutter_only_adds_ink_and_keeps_the_boxes(make_cfg) -> None:
    plain = _data(make_cfg)
    cluttered = _data(make_cfg, "data=colocalisation")
    for split in ("train", "val", "test"):
        a, boxes = getattr(plain, f"{split}_set").tensors
        b, same_boxes = getattr(cluttered, f"{split}_set").tensors
        assert torch.equal(boxes, same_boxes)
        assert (b >= a).all() and (b > a).any()  # pasted with max: clutter only adds ink


def test_fixed_sets_are_the_same_whatever_the_batch_size(make_cfg) -> None:
    one = _data(make_cfg, "data=colocalisation")
    other = _data(make_cfg, "data=colocalisation", "data.batch_size=5", "data.eval_batch_size=3")
    for split in ("train", "val", "test"):
        for a, b in zip(
            getattr(one, f"{split}_set").tensors,
            getattr(other, f"{split}_set").tensors,
            strict=True,
        ):
            assert torch.equal(a, b)
    batch = next(iter(one.val_dataloader()))
    images, boxes = one.on_after_batch_transfer(batch, 0)
    assert images.shape == (10, 1, 84, 84) and boxes.shape == (10, 4)


# ------------------------------------------------------------------------ end to end
def test_colocalisation_run_end_to_end(make_cfg, tmp_path: Path) -> None:
    encoder_cfg = make_cfg(
        "model=cnn",
        "data=mnist",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "test=false",
        output_dir=tmp_path / "encoder",
    )
    train(encoder_cfg)
    encoder = tmp_path / "encoder" / "checkpoints" / "last.ckpt"
    run = tmp_path / "coloc"
    # 2 steps an epoch: epoch 0 learns the searched boxes, epoch 1 descends the hinge
    overrides = (
        "experiment=colocalisation/tc",
        "digit=3",
        *SMALL,
        "trainer.max_epochs=2",
        "model.search_steps=2",
    )
    cfg = make_cfg(*overrides, f"model.encoder_ckpt={encoder}", output_dir=run)
    metrics = train(cfg)

    assert 0.0 <= metrics["test/coloc/hit_rate"] <= 1.0
    assert 0.0 <= metrics["val/coloc/hit_rate_best"] <= 1.0
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    grids = sorted((run / "transform_grids").glob("epoch_*.png"))
    assert grids
    # the crop's box (red) and the true box (green) are drawn on the input canvases
    pixels = np.asarray(Image.open(grids[-1]).convert("RGB")).reshape(-1, 3).astype(int)
    red, green, blue = pixels.T
    assert ((red > 200) & (green < 100) & (blue < 100)).any()
    assert ((green > 200) & (red < 100) & (blue < 100)).any()
    assert not (run / "failure.json").exists()
    with open(run / "csv" / "metrics.csv") as f:
        logged = [row for row in csv.DictReader(f) if row.get("val/coloc/hit_rate")]
    assert len(logged) == 2  # every validation epoch
    with open(run / "csv" / "metrics.csv") as f:
        searched = {
            int(row["epoch"])
            for row in csv.DictReader(f)
            if row.get("train/coloc/search_hit_rate_epoch")
        }
    assert searched == {0}  # the search's boxes are learnt for model.search_steps steps only
    assert "test/coloc/hit_rate" in json.loads((run / "metrics.json").read_text())

    # The encoder's weights travel in the checkpoint: testing it needs no encoder file.
    encoder.rename(tmp_path / "gone.ckpt")
    best = run / "checkpoints" / "best.ckpt"
    again = make_cfg(
        *overrides,
        f"model.encoder_ckpt={encoder}",
        "train=false",
        f"ckpt_path={best}",
        output_dir=tmp_path / "eval",
    )
    assert train(again)["test/coloc/hit_rate"] == pytest.approx(metrics["test/coloc/hit_rate"])

    # A fresh run without the encoder says what to do, in failure.json too.
    fresh = make_cfg(*overrides, f"model.encoder_ckpt={encoder}", output_dir=tmp_path / "fresh")
    with pytest.raises(ConfigError, match=r"model\.encoder_ckpt"):
        train(fresh)
    failure = json.loads((tmp_path / "fresh" / "failure.json").read_text())
    assert "src/train.py model=cnn data=mnist" in failure["message"]


def test_descriptor_normalisations_by_hand() -> None:
    conv, logits = torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    raw = descriptor([conv, logits])
    assert raw.tolist() == [[3.0, 4.0, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0]]
    # "l2": row 0 has length √29; row 1 length 1
    l2 = descriptor([conv, logits], "l2")
    expected = [[3 / 29**0.5, 4 / 29**0.5, 0.0, 2 / 29**0.5], [0.0, 0.0, 1.0, 0.0]]
    assert l2.tolist() == [pytest.approx(r) for r in expected]
    # "layer": (0.6, 0.8) and (0, 1), then ÷√2; a zero layer stays zero
    layer = descriptor([conv, logits], "layer")
    h = 2**-0.5
    assert layer.tolist() == [pytest.approx(r) for r in [[0.6 * h, 0.8 * h, 0.0, h], [0, 0, h, 0]]]
    assert layer[0].norm().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="normalize"):
        descriptor([conv], "max")


# ------------------------------------------------------------------------------ search
def test_crop_grid_spans_the_image_with_every_crop_inside() -> None:
    thetas = crop_grid([0.25, 0.5, 1.0], 3)
    assert thetas.shape == (27, 3)
    for i, scale in enumerate([0.25, 0.5, 1.0]):
        w = thetas[9 * i : 9 * (i + 1)]
        assert (w[:, 0] == scale).all()
        shifts = w[:, 1:]
        assert shifts.abs().max().item() == pytest.approx(1 - scale)  # corners touch edges
        expected = sorted({scale - 1, 0.0, 1 - scale})  # one place for a whole-image crop
        assert sorted(set(shifts[:, 0].tolist())) == pytest.approx(expected)
    with pytest.raises(ValueError, match="scale"):
        crop_grid([1.5], 3)
    with pytest.raises(ValueError, match="steps"):
        crop_grid([0.5], 0)


def test_choose_crops_finds_the_object_every_image_shares() -> None:
    # 4 images, 3 candidate crops each, descriptors in 9 dimensions: the object is 3·e0
    # in every image (at candidate 0, 1, 2, 1); every other crop is clutter, 3·e_j with
    # its own j. All crops lie equally far (9) from their image's random crops, so the
    # start (the farthest candidate: the first) finds the object in image 0 only.
    where = [0, 1, 2, 1]
    crops = torch.zeros(4, 3, 9)
    j = 1
    for n, k_object in enumerate(where):
        for k in range(3):
            crops[n, k, 0 if k == k_object else j] = 3.0
            j += k != k_object
    choice = choose_crops(crops, torch.full((4, 3), 9.0), margin=1.0, sweeps=3)
    assert choice.tolist() == where
    # no sweep: the start only
    assert choose_crops(crops, torch.full((4, 3), 9.0), sweeps=0).tolist() == [0, 0, 0, 0]


class _PooledEncoder(torch.nn.Module):
    """Crops ``(B, 1, S, S)`` → their 4×4 average-pooled pixels ``(B, 16)``."""

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(crops, 4).flatten(1)


def test_search_boxes_find_a_pattern_shared_by_every_image(make_cfg) -> None:
    # 12 black 84×84 canvases, each with the same 28×28 ring at a random place; no label
    # and no box goes into the search, and it finds every ring (IoU > 0.5).
    cfg = make_cfg("experiment=colocalisation/t")
    net = instantiate(cfg.model.net)
    net.encoder = _PooledEncoder()
    gen = torch.Generator().manual_seed(0)
    ring = torch.ones(28, 28)
    ring[7:21, 7:21] = 0.0
    x, true = torch.zeros(12, 1, 84, 84), torch.zeros(12, 4)
    for n in range(12):
        left, top = (int(v) for v in torch.randint(0, 57, (2,), generator=gen))
        x[n, 0, top : top + 28, left : left + 28] = ring
        true[n] = torch.tensor([left, top, left + 28, top + 28])
    boxes = net.search_boxes(x, margin=1.0, generator=gen)
    assert boxes.shape == (12, 4)
    iou = box_iou(boxes, true)
    assert (iou > 0.5).all(), iou
