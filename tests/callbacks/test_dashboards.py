"""What a run shows in W&B and TensorBoard: learning rates, transform grids and their
evolution, pose plots, the confusion matrix and the test predictions, hyperparameters."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from stnlab.callbacks import ErrorAnalysisCallback, TransformGridCallback
from stnlab.callbacks.pictures import publish_picture
from stnlab.image_grid import BOX_COLOURS, PAD, TITLE_HEIGHT, check_picture
from stnlab.tasks import train

IMAGES = {"transform_grid", "transform_evolution", "pose_scatter"}
TEST_IMAGES = {"confusion_matrix", "test_predictions"}


def _events(folder: Path) -> object:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(
        str(folder), size_guidance={ea.IMAGES: 0, ea.SCALARS: 0, ea.TENSORS: 0}
    )
    acc.Reload()
    return acc


def _hparams(acc: object) -> tuple[dict[str, object], list[str]]:
    """The HParams record of a TensorBoard run: (hyperparameters, metric tags)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    params: dict[str, object] = {}
    metrics: list[str] = []
    for content in acc.PluginTagToContent("hparams").values():  # type: ignore[attr-defined]
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.WhichOneof("data") == "session_start_info":
            for key, value in data.session_start_info.hparams.items():
                params[key] = getattr(value, value.WhichOneof("kind"))
        if data.WhichOneof("data") == "experiment":
            metrics = [m.name.tag for m in data.experiment.metric_infos]
    return params, metrics


def _not_blank_uint8(png: bytes | Path) -> np.ndarray:
    image = Image.open(io.BytesIO(png) if isinstance(png, bytes) else png)
    pixels = np.asarray(image.convert("RGB"))
    return check_picture(pixels, "read back")


def _staged(folder: Path, start: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.read_bytes().startswith(start)]


def test_a_run_shows_the_same_pictures_in_tensorboard_and_wandb(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb_data = tmp_path / "wandb_data"
    monkeypatch.setenv("WANDB_DATA_DIR", str(wandb_data))
    cfg = make_cfg(
        "model=stn_cnn",
        "debug=limit",
        "logger=[wandb,tensorboard]",
        "model.loc_lr_mult=0.5",
        "callbacks.error_analysis.num_samples=64",  # the config's own (the tests draw fewer)
    )
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)

    # TensorBoard: every picture, both learning rates, the HParams record.
    acc = _events(out / "tensorboard")
    tags = acc.Tags()  # type: ignore[attr-defined]
    assert set(tags["images"]) == IMAGES | TEST_IMAGES
    for tag in tags["images"]:
        _not_blank_uint8(acc.Images(tag)[-1].encoded_image_string)  # type: ignore[attr-defined]
    assert len(acc.Images("transform_grid")) == 2  # type: ignore[attr-defined]  # 2 epochs
    lrs = {t: acc.Scalars(t) for t in tags["scalars"] if t.startswith("lr-")}  # type: ignore[attr-defined]
    assert sorted(lrs) == ["lr-SGD/backbone", "lr-SGD/transformer"]
    for backbone, transformer in zip(*lrs.values(), strict=True):
        assert transformer.value == pytest.approx(0.5 * backbone.value)
    params, metric_tags = _hparams(acc)
    assert params["model/loc_lr_mult"] == pytest.approx(0.5)
    assert params["data/variant"] == cfg.data.variant
    assert not any(k.startswith(("paths/", "callbacks/", "logger/")) for k in params)
    assert set(metric_tags) == {
        "hp/test_err",
        "hp/test_acc",
        "hp/val_acc_best",
        "hp/val_pose_undone",
    }
    assert acc.Scalars("hp/test_err")[-1].value == pytest.approx(metrics["test/err"], abs=1e-4)  # type: ignore[attr-defined]

    # W&B (offline run files): the same pictures, the table with images, the GIF.
    run = next((out / "wandb").glob("offline-run-*")) / "files" / "media"
    logged = {p.name.rsplit("_", 2)[0] for p in (run / "images").glob("*.png")}
    assert logged == IMAGES | TEST_IMAGES
    for png in (run / "images").glob("*.png"):
        _not_blank_uint8(png)
    assert len(list((run / "videos").glob("transform_evolution_gif_*.gif"))) == 1
    # A table with images is a W&B artifact: offline, it waits in W&B's data folder
    # (WANDB_DATA_DIR) for `wandb sync`, images included.
    staged = [json.loads(p.read_bytes()) for p in _staged(wandb_data, b"{")]
    table = next(t for t in staged if t.get("columns", [])[:2] == ["input", "transformed"])
    assert table["columns"][2:4] == ["index", "label"]
    assert len(table["data"]) == 64  # num_samples
    assert all(row[0]["_type"] == row[1]["_type"] == "image-file" for row in table["data"])
    for png in _staged(wandb_data, b"\x89PNG"):
        _not_blank_uint8(png)
    assert len(list((run / "table").glob("confusion_matrix_plot_table_*.json"))) == 1

    # The files beside them: the matrix adds up to the test accuracy, mistakes come first.
    analysis = out / "test_analysis"
    with open(analysis / "confusion_matrix.csv") as f:
        counts = np.array([row[1:] for row in list(csv.reader(f))[1:]], dtype=float)
    assert counts.shape == (10, 10)
    assert np.trace(counts) / counts.sum() == pytest.approx(metrics["test/acc"], abs=1e-6)
    with open(analysis / "test_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    correct = [r["correct"] == "True" for r in rows]
    assert correct == sorted(correct)  # every mistake before every correct sample
    wrong_probs = [float(r["probability"]) for r in rows if r["correct"] == "False"]
    assert wrong_probs == sorted(wrong_probs, reverse=True)
    assert all(r["label"] != r["prediction"] for r in rows if r["correct"] == "False")
    for name in ("confusion_matrix.png", "test_predictions.png"):
        _not_blank_uint8(analysis / name)
    # the grid: a title strip above the panels, the transformer's window outlined in blue
    # on the inputs (left panel), none of that blue in the outputs (right panel)
    grid = _not_blank_uint8(out / "transform_grids" / "epoch_002.png")
    zoom = 3
    strip = grid[: TITLE_HEIGHT * zoom]
    assert (strip > 200).any() and (strip[-zoom:] == 0).all()  # white text on black
    blue = np.all(
        np.abs(grid.astype(int) - np.round(np.array(BOX_COLOURS["window"]) * 255)) <= 1, -1
    )
    left = 4 * (28 + PAD) + PAD  # the input panel's width before the zoom
    assert blue[:, : left * zoom].sum() > 16 * 4 * 20 * zoom  # 16 outlines
    assert not blue[:, (left + 4) * zoom :].any()
    evolution = _not_blank_uint8(out / "transform_grids" / "evolution.png")
    assert evolution.shape[0] > 8 * 28  # 8 probes, one per row
    assert Image.open(out / "transform_grids" / "evolution.gif").n_frames == 2


def test_a_run_without_a_logger_still_trains(make_cfg: Callable[..., DictConfig]) -> None:
    """The learning-rate monitor stands aside instead of raising without a logger."""
    cfg = make_cfg("model=stn_cnn", "debug=limit", "~logger", "trainer.max_epochs=1")
    metrics = train(cfg)
    assert "test/err" in metrics
    assert (Path(cfg.paths.output_dir) / "test_analysis" / "confusion_matrix.csv").is_file()


def _fake_trainer(loggers: list[object] | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        global_rank=0, loggers=loggers or [], global_step=7, sanity_checking=False
    )


def test_the_error_table_keeps_the_worst_samples_across_batches(tmp_path: Path) -> None:
    callback = ErrorAnalysisCallback(tmp_path, num_samples=3)
    trainer, module = _fake_trainer(), SimpleNamespace(net=None, device=torch.device("cpu"))
    callback.on_test_epoch_start(trainer, module)  # type: ignore[arg-type]
    # probabilities of the predicted class: 0.9 (right), 0.6 (wrong), 0.4 (right), 0.8 (wrong)
    logits = torch.log(
        torch.tensor([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.4, 0.3, 0.3], [0.1, 0.1, 0.8]]) + 1e-9
    )
    labels = torch.tensor([0, 0, 0, 1])
    images = torch.rand(4, 1, 5, 5)
    for lo, hi in ((0, 2), (2, 4)):
        batch = (images[lo:hi], labels[lo:hi])
        callback.on_test_batch_end(trainer, module, logits[lo:hi], batch, 0)  # type: ignore[arg-type]
    callback.on_test_epoch_end(trainer, module)  # type: ignore[arg-type]
    with open(tmp_path / "test_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    # mistakes, most confident first (index 3 at 0.8, index 1 at 0.6), then the least
    # confident correct one (index 2 at 0.4); index 0 (0.9, right) is left out
    assert [int(r["index"]) for r in rows] == [3, 1, 2]
    assert [r["correct"] for r in rows] == ["False", "False", "True"]
    assert float(rows[0]["label_probability"]) == pytest.approx(0.1, abs=1e-4)
    with open(tmp_path / "confusion_matrix.csv") as f:
        counts = [[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]]
    assert counts == [[2, 1, 0], [0, 0, 1], [0, 0, 0]]


def test_every_logged_picture_is_checked_uint8_and_not_blank(tmp_path: Path) -> None:
    trainer = _fake_trainer()
    with pytest.raises(ValueError, match="must be uint8"):
        publish_picture(trainer, "grid", np.ones((4, 4, 3)), "", tmp_path / "a.png")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'grid' is blank"):
        publish_picture(trainer, "grid", np.zeros((4, 4, 3), np.uint8), "", tmp_path / "b.png")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())  # nothing written for a refused picture
    good = np.zeros((4, 4, 3), np.uint8)
    good[1, 2] = 200
    publish_picture(trainer, "grid", good, "", tmp_path / "c.png")  # type: ignore[arg-type]
    assert (np.asarray(Image.open(tmp_path / "c.png")) == good).all()


def test_the_evolution_frames_survive_a_checkpoint(tmp_path: Path) -> None:
    """A resumed run's evolution starts at its first epoch: the frames are in the
    callback's state, which loads with ``weights_only=True`` like the rest of a checkpoint."""
    callback = TransformGridCallback(tmp_path, num_probes=4)
    callback._inputs = torch.randint(0, 255, (4, 1, 6, 6), dtype=torch.uint8)
    callback._frames = [(e, torch.randint(0, 255, (4, 1, 6, 6), dtype=torch.uint8)) for e in (1, 2)]
    torch.save(callback.state_dict(), tmp_path / "state.pt")
    restored = TransformGridCallback(tmp_path, num_probes=4)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert [e for e, _ in restored._frames] == [1, 2]
    assert all(
        torch.equal(a, b) for (_, a), (_, b) in zip(restored._frames, callback._frames, strict=True)
    )
    picture = restored._write_evolution(gif=True)
    assert picture.shape[1] > 3 * 6  # input + 2 epochs
    assert Image.open(tmp_path / "evolution.gif").n_frames == 2
