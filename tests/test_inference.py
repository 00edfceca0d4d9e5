"""Predict on PNG/JPEG files and export (TorchScript, ONNX): the LightningModule's answers."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from cli_helper import run_train
from stnlab.checkpoints import read_checkpoint
from stnlab.errors import ConfigError
from stnlab.inference import export_checkpoint, load_image, load_images, predict_files
from stnlab.tasks import train


@pytest.fixture
def trained(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> Path:
    cfg = make_cfg("model=stn_cnn", "data=rotated", "debug=limit", output_dir=tmp_path / "run")
    return Path(train(cfg)["test_ckpt"])


def lightning_module(ckpt: Path) -> torch.nn.Module:
    """The STNLitModule as training built it, with the checkpoint's weights."""
    checkpoint = read_checkpoint(ckpt)
    module = instantiate(OmegaConf.create(checkpoint["stnlab_config"]["model"]))
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def write_images(folder: Path, fake_mnist: Path) -> list[np.ndarray]:
    """Three test digits as files: a dark-on-light PNG, a JPEG and a larger PNG."""
    from stnlab.data.sources import load_split

    folder.mkdir()
    digits = load_split(fake_mnist, "mnist", "test", allow_fetch=False)[0][:3].numpy()
    Image.fromarray(255 - digits[0]).save(folder / "a_dark_on_light.png")
    Image.fromarray(digits[1]).save(folder / "b.jpg", quality=95)
    Image.fromarray(digits[2]).resize((56, 56)).save(folder / "c_big.png")
    (folder / "notes.txt").write_text("not an image: skipped in a folder")
    return list(digits)


def test_predict_matches_the_lightning_module(
    trained: Path, fake_mnist: Path, tmp_path: Path
) -> None:
    digits = write_images(tmp_path / "images", fake_mnist)
    images, files = load_images(tmp_path / "images", channels=1, size=28)
    assert [f.name for f in files] == ["a_dark_on_light.png", "b.jpg", "c_big.png"]
    assert images.shape == (3, 1, 28, 28) and images.min() >= 0.0 and images.max() <= 1.0
    # the dark-on-light file was inverted back to MNIST's light-on-dark
    assert torch.allclose(images[0, 0] * 255, torch.from_numpy(digits[0]).float(), atol=1)
    rows = predict_files(trained, tmp_path / "images", tmp_path / "out")
    with torch.inference_mode():
        probs = lightning_module(trained)(images).softmax(1)
    assert [r["predicted"] for r in rows] == probs.argmax(1).tolist()
    assert [r["probability"] for r in rows] == pytest.approx(probs.max(1).values.tolist(), abs=1e-5)
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["predicted"]) for r in table] == probs.argmax(1).tolist()
    picture = Image.open(tmp_path / "out" / table[0]["image"])
    assert picture.width > 2 * picture.height * 0.9  # input beside transformed


def test_images_keep_the_training_size_on_larger_canvases(tmp_path: Path) -> None:
    Image.fromarray(np.full((50, 50), 255, dtype=np.uint8)).save(tmp_path / "white.png")
    x = load_image(tmp_path / "white.png", channels=1, size=42, invert="false", image_size=28)
    assert x.shape == (1, 42, 42)
    assert x[0, 7:35, 7:35].min() == 1.0 and x.sum() == 28 * 28  # a centred 28×28 square
    # a bright border inverts grey images (auto) but never colour ones
    grey = load_image(tmp_path / "white.png", channels=1, size=28)
    colour = load_image(tmp_path / "white.png", channels=3, size=32)
    assert grey.max() == 0.0 and colour.shape == (3, 32, 32) and colour.min() == 1.0


def test_predict_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no PNG or JPEG"):
        load_images(tmp_path / "empty", 1, 28)
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ConfigError, match=r"x\.gif is not a PNG or JPEG"):
        load_images(tmp_path / "x.gif", 1, 28)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ConfigError, match=r"cannot read .*broken\.png"):
        load_images(tmp_path / "broken.png", 1, 28)
    with pytest.raises(ConfigError, match="does not exist"):
        load_images(tmp_path / "missing", 1, 28)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "pt2"])
def test_export_gives_the_lightning_module_logits(fmt: str, trained: Path, tmp_path: Path) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    path, diff = export_checkpoint(trained, fmt, tmp_path)
    assert path.name == {"torchscript": "model.pt", "onnx": "model.onnx", "pt2": "model.pt2"}[fmt]
    assert diff <= 1e-4
    x = torch.rand(5, 1, 28, 28)
    with torch.inference_mode():
        want = lightning_module(trained)(x)
    if fmt == "torchscript":
        got = torch.jit.load(str(path))(x)
    elif fmt == "pt2":
        got = torch.export.load(str(path)).module()(x)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.equal(got.argmax(1), want.argmax(1))
    with pytest.raises(ConfigError, match="format='tflite' is unknown"):
        export_checkpoint(trained, "tflite", tmp_path)


def test_cli_eval_predict_export(trained: Path, fake_mnist: Path, tmp_path: Path) -> None:
    """The entry points as a user runs them (their own processes, Hydra run folders)."""
    write_images(tmp_path / "images", fake_mnist)
    runs = {
        "eval.py": [f"ckpt_path={trained}", "logger=csv"],
        "predict.py": [f"ckpt_path={trained}", f"input={tmp_path / 'images'}"],
        "export.py": [f"ckpt_path={trained}"],
    }
    for script, overrides in runs.items():
        out = tmp_path / script
        done = run_train(fake_mnist, *overrides, f"hydra.run.dir={out}", script=script)
        assert done.returncode == 0, done.stderr[-2000:]
    assert len((tmp_path / "eval.py" / "results.csv").read_text().splitlines()) == 5
    assert (tmp_path / "predict.py" / "predictions.csv").is_file()
    assert (tmp_path / "export.py" / "model.pt").is_file()
    bad = run_train(
        fake_mnist, "ckpt_path=nope.ckpt", f"hydra.run.dir={tmp_path / 'bad'}", script="eval.py"
    )
    assert bad.returncode == 1
    assert "ckpt_path=nope.ckpt does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
